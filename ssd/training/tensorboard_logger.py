"""TensorBoard logging for ``train.py --tensorboard [DIR]`` (rank 0 only).

:class:`TensorBoardLogger` turns the records the trainer writes to its metrics log into
scalars: it sits behind :class:`MetricsTee`, so the trainer needs no TensorBoard code. At each
evaluation :class:`ValidationImages` adds a few validation images with the model's detections
drawn. As with visdom, a problem (package missing, disk full, drawing error) is logged as one
warning and TensorBoard logging stops; training goes on.

Tags: ``loss/{total,loc,conf}``, ``train/{lr,images_per_s,grad_norm}``,
``epoch/{total,loc,conf}`` (per-epoch mean loss), ``eval/mAP``, ``eval_AP/<class>``,
``eval/images_per_s`` and images ``eval_images/<k>``; the step is the iteration.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: ``(record type, record key) -> tag``
SCALAR_TAGS: dict[tuple[str, str], str] = {
    ("train", "loss"): "loss/total",
    ("train", "loss_l"): "loss/loc",
    ("train", "loss_c"): "loss/conf",
    ("train", "lr"): "train/lr",
    ("train", "img_per_s"): "train/images_per_s",
    ("train", "grad_norm"): "train/grad_norm",
    ("epoch", "loss"): "epoch/total",
    ("epoch", "loss_l"): "epoch/loc",
    ("epoch", "loss_c"): "epoch/conf",
    ("eval", "mAP"): "eval/mAP",
    ("eval", "images_per_s"): "eval/images_per_s",
}


def default_log_dir(flag: str, save_folder: PathLike) -> Path:
    """``--tensorboard`` given bare (``''``) means ``<save_folder>/tb``."""
    return Path(flag).expanduser() if flag else Path(save_folder) / "tb"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class TensorBoardLogger:
    """Writes event files under ``log_dir`` (created on the first record).

    The writer opens at the run's ``start`` record with ``purge_step`` just past the iteration
    the run starts from, so TensorBoard hides what an interrupted attempt (or an earlier run in
    the same folder) logged past the checkpoint this run continues from.

    Args:
        log_dir: the event-file folder (``tensorboard --logdir`` it, or a parent of it).
        writer_factory: ``factory(log_dir, purge_step) -> SummaryWriter``-like (tests);
            default ``torch.utils.tensorboard.SummaryWriter``.
    """

    def __init__(self, log_dir: PathLike, writer_factory: Callable[..., Any] | None = None
                 ) -> None:
        self.log_dir = Path(log_dir)
        self._factory = writer_factory
        self._writer: Any = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return not self._failed

    def _fail(self, error: BaseException, what: str) -> None:
        if not self._failed:
            log.warning("tensorboard: %s (%s: %s); training goes on without TensorBoard logs",
                        what, type(error).__name__, error)
        self._failed = True
        self.close()

    def _open(self, purge_step: int | None) -> Any:
        if self._writer is None and not self._failed:
            try:
                factory = self._factory
                if factory is None:
                    from torch.utils.tensorboard import SummaryWriter

                    def factory(log_dir: str, purge_step: int | None) -> Any:
                        return SummaryWriter(log_dir, purge_step=purge_step, flush_secs=30)
                self._writer = factory(os.fspath(self.log_dir), purge_step)
                log.info("tensorboard: logging to %s (tensorboard --logdir %s)", self.log_dir,
                         self.log_dir)
            except ImportError as e:
                self._fail(e, "the tensorboard package is not installed (pip install "
                              "tensorboard, or 'ssd[tensorboard]')")
            except Exception as e:
                self._fail(e, f"cannot write to {self.log_dir}")
        return self._writer

    def write(self, record: Mapping[str, Any]) -> None:
        """Log one metrics record (see the module docstring for the tags)."""
        kind, step = record.get("type"), record.get("iter")
        if self._failed or not isinstance(step, int):
            return
        # TensorBoard hides logged steps >= purge_step; the run logs from step + 1 on.
        writer = self._open(step + 1 if kind == "start" else None)
        if writer is None:
            return
        try:
            for (rec_kind, key), tag in SCALAR_TAGS.items():
                if rec_kind == kind and key in record:
                    value = _finite(record[key])
                    if value is not None:
                        writer.add_scalar(tag, value, step)
            if kind == "eval" and isinstance(record.get("ap"), Mapping):
                for name, ap in record["ap"].items():
                    value = _finite(ap)
                    if value is not None:
                        writer.add_scalar(f"eval_AP/{name}", value, step)
            if kind in ("eval", "interrupted"):
                writer.flush()
        except Exception as e:
            self._fail(e, "writing scalars failed")

    def images(self, step: int, pictures: Sequence[np.ndarray]) -> None:
        """Add RGB uint8 ``[H, W, 3]`` pictures as ``eval_images/<k>`` at ``step``."""
        writer = self._open(None)
        if writer is None:
            return
        try:
            for k, pic in enumerate(pictures):
                writer.add_image(f"eval_images/{k}", pic, step, dataformats="HWC")
            writer.flush()
        except Exception as e:
            self._fail(e, "writing images failed")

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as e:  # a full disk must not fail the end of training
                log.warning("tensorboard: closing %s failed (%s)", self.log_dir, e)


class MetricsTee:
    """A metrics log that also hands every record to a :class:`TensorBoardLogger`."""

    def __init__(self, metrics: Any, tensorboard: TensorBoardLogger) -> None:
        self.metrics, self.tensorboard = metrics, tensorboard

    def write(self, record: Mapping[str, Any]) -> None:
        self.metrics.write(record)
        self.tensorboard.write(record)

    def close(self) -> None:
        try:
            self.metrics.close()
        finally:
            self.tensorboard.close()

    def __getattr__(self, name: str) -> Any:  # path etc. of the wrapped log
        return getattr(self.metrics, name)


class ValidationImages:
    """The first ``count`` validation images with the model's current detections drawn.

    Args:
        dataset: has ``pull_image(i) -> BGR uint8`` and ``len``; or a zero-argument callable
            building it (called once, on the first evaluation).
        class_names: foreground names; default the dataset's ``classes``.
        count: images per evaluation.
        threshold: draw detections scoring at least this.
    """

    def __init__(self, dataset: Any, class_names: Sequence[str] | None = None,
                 count: int = 4, threshold: float = 0.3) -> None:
        self._dataset = dataset
        self.class_names = list(class_names) if class_names is not None else None
        self.count, self.threshold = int(count), float(threshold)
        self._images: list[np.ndarray] | None = None

    def _load(self) -> list[np.ndarray]:
        if self._images is None:
            ds = self._dataset() if callable(self._dataset) and not hasattr(
                self._dataset, "pull_image") else self._dataset
            inner = getattr(ds, "datasets", [ds])[0]  # ConcatDataset: its first part
            if self.class_names is None:
                self.class_names = [str(n) for n in getattr(inner, "classes", ())]
            self._images = [inner.pull_image(i) for i in range(min(self.count, len(inner)))]
        return self._images

    def draw(self, model: Any) -> list[np.ndarray]:
        """Detect on the images with ``model`` (any phase/mode; restored) and draw the boxes."""
        import cv2
        import torch

        from ..config import MEANS
        from ..data.base import to_chw_rgb_tensor
        from ..data.transforms import base_transform
        from ..detector import collect_detections
        from ..evaluation.inference import detection_mode, split_detections
        from ..visualize import draw_detections

        images = self._load()
        if not images:
            return []
        with detection_mode(model) as net, torch.no_grad():
            param = next(net.parameters())
            size = int(getattr(net, "size", 300))
            batch = torch.stack([to_chw_rgb_tensor(base_transform(im, size, MEANS))
                                 for im in images])
            sizes = torch.tensor([im.shape[:2] for im in images], dtype=torch.long)
            per_image = split_detections(net(batch.to(param.device)), sizes)
        names = self.class_names or [str(c) for c in range(len(per_image[0]) - 1)]
        out = []
        for bgr, dets in zip(images, per_image):
            result = collect_detections(dets, bgr.shape[:2], self.threshold, names)
            out.append(draw_detections(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), result))
        return out


def attach_tensorboard(log_dir: PathLike, metrics: Any, eval_fn: Callable[..., Any] | None,
                       val_dataset: Any = None, class_names: Sequence[str] | None = None
                       ) -> tuple[MetricsTee, Callable[..., Any] | None]:
    """Wire TensorBoard into a training run: returns the metrics log to give the trainer (a
    tee) and an evaluation function that also logs :class:`ValidationImages`."""
    tb = TensorBoardLogger(log_dir)
    tee = MetricsTee(metrics, tb)
    if eval_fn is None or val_dataset is None:
        return tee, eval_fn
    pictures = ValidationImages(val_dataset, class_names)

    def evaluate(model: Any, iteration: int) -> Mapping[str, Any]:
        result = eval_fn(model, iteration)
        if tb.enabled:
            try:
                drawn = pictures.draw(model)
            except Exception as e:
                log.warning("tensorboard: could not draw validation images at iteration %d "
                            "(%s: %s)", iteration, type(e).__name__, e)
            else:
                tb.images(iteration, drawn)
        return result

    return tee, evaluate
