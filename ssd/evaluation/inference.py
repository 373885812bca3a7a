"""Batched inference over a detection dataset: images in, per-class pixel boxes out."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..precision import autocast, resolve_precision
from ..weights import unwrap_model

__all__ = [
    "EvalImages",
    "InferenceResult",
    "collate_eval",
    "detection_mode",
    "resolve_device",
    "run_inference",
    "split_detections",
    "unwrap_model",
]


def resolve_device(device: str | torch.device | None = "auto", cuda: bool | None = None
                   ) -> torch.device:
    """Pick the device: ``'auto'``/``None`` means CUDA when available, else CPU.

    ``cuda`` is ssd.pytorch's ``--cuda`` flag: when ``device`` is auto, ``True`` asks for CUDA
    and ``False`` for the CPU. Raises ``ValueError`` when CUDA is asked for and missing.
    """
    if cuda is not None and (device is None or str(device) == "auto"):
        device = "cuda" if cuda else "cpu"
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here "
                         f"(use --device cpu)")
    return dev


@contextlib.contextmanager
def detection_mode(model: nn.Module, **detect_settings: Any) -> Iterator[nn.Module]:
    """Run ``model`` as a detector: test phase, ``eval()``, the given ``top_k``/``conf_thresh``/
    ``nms_thresh``/``max_per_image`` (``None`` values are left alone); everything is put back
    on exit, so a training loop can call this mid-training.

    Yields the unwrapped SSD (DDP wrappers would synchronise buffers on forward).
    """
    core = unwrap_model(model)
    if not hasattr(core, "phase"):
        raise TypeError(f"expected an SSD model (with a .phase), got {type(core).__name__}")
    saved_phase = core.phase
    saved_training = [(m, m.training) for m in core.modules()]
    saved_settings = {k: getattr(core, k) for k in detect_settings if hasattr(core, k)}
    unknown = set(detect_settings) - set(saved_settings)
    if unknown:
        raise TypeError(f"{type(core).__name__} has no detection setting(s) {sorted(unknown)}")
    try:
        core.phase = "test"
        core.eval()
        for k, v in detect_settings.items():
            if v is not None:
                setattr(core, k, v)
        yield core
    finally:
        core.phase = saved_phase
        for k, v in saved_settings.items():
            setattr(core, k, v)
        for m, mode in saved_training:
            m.training = mode


class EvalImages(Dataset):
    """A detection dataset seen as ``(image tensor, index, height, width)`` items.

    ``dataset.pull_item(i)`` must return ``(image [3, S, S], target, height, width)``, the
    network input and the original image size (VOCDetection and COCODetection do).
    """

    def __init__(self, dataset: Any) -> None:
        if not hasattr(dataset, "pull_item"):
            raise TypeError(f"{type(dataset).__name__} has no pull_item(i) -> (img, target, h, w)")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, int]:
        img, _, h, w = self.dataset.pull_item(i)
        if not isinstance(img, torch.Tensor):
            img = torch.as_tensor(np.ascontiguousarray(img))
        return img, i, int(h), int(w)


def collate_eval(batch: Sequence[tuple[torch.Tensor, int, int, int]]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack to ``images [B, 3, S, S]``, ``indices [B]`` and ``sizes [B, 2]`` (height, width)."""
    imgs = torch.stack([b[0] for b in batch])
    idx = torch.tensor([b[1] for b in batch], dtype=torch.long)
    sizes = torch.tensor([[b[2], b[3]] for b in batch], dtype=torch.long)
    return imgs, idx, sizes


def split_detections(dets: torch.Tensor, sizes: torch.Tensor) -> list[list[np.ndarray]]:
    """Per image and class, the non-empty rows of a detection tensor, in pixels.

    Args:
        dets: ``[B, C, K, 5]`` rows ``(score, x1, y1, x2, y2)`` in relative coordinates,
            zero-padded (a row with score 0 is padding).
        sizes: ``[B, 2]`` image heights and widths.

    Returns:
        ``out[b][c]``: float32 ``[n, 5]`` rows ``(x1, y1, x2, y2, score)``, boxes times
        ``(w, h, w, h)`` (not clipped, as in ssd.pytorch's ``all_boxes``); class 0 is empty.
    """
    sizes = sizes.to(dets.device, torch.float32)
    scale = torch.stack([sizes[:, 1], sizes[:, 0], sizes[:, 1], sizes[:, 0]], dim=1)
    boxes = dets[..., 1:].float() * scale[:, None, None, :]
    rows = torch.cat([boxes, dets[..., :1].float()], dim=-1).cpu().numpy()
    counts = (dets[..., 0] > 0).sum(-1).cpu().numpy()  # rows are sorted: the kept ones first
    empty = np.zeros((0, 5), dtype=np.float32)
    out = []
    for b in range(rows.shape[0]):
        per_class = [empty]
        for c in range(1, rows.shape[1]):
            n = int(counts[b, c])
            per_class.append(rows[b, c, :n].copy() if n else empty)
        out.append(per_class)
    return out


@dataclass
class InferenceResult:
    """Detections of a whole dataset.

    ``all_boxes[c][i]`` is ``[n, 5]`` ``(x1, y1, x2, y2, score)`` in pixels of image ``i`` for
    class ``c`` (ssd.pytorch's ``detections.pkl`` layout; ``c = 0`` is the empty background).
    """

    all_boxes: list[list[np.ndarray]]
    num_images: int
    seconds: float
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("inf")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_inference(model: nn.Module, dataset: Any, *, device: str | torch.device | None = None,
                  batch_size: int = 8, num_workers: int = 0, amp: bool = False,
                  top_k: int | None = None, conf_thresh: float | None = None,
                  nms_thresh: float | None = None, channels_last: bool = False,
                  progress: bool = True, desc: str = "detect",
                  precision: str = "fp32") -> InferenceResult:
    """Detect objects in every image of ``dataset``.

    Args:
        model: an SSD (either phase, possibly wrapped); it is switched to the test phase and
            ``eval()`` for the run and restored afterwards.
        dataset: a detection dataset with ``pull_item`` (see :class:`EvalImages`).
        device: where to run (default: the model's device); the model is moved there.
        batch_size, num_workers: DataLoader settings.
        amp: float16 autocast on CUDA (ignored on CPU).
        top_k, conf_thresh, nms_thresh: detection settings for this run (``None``: the model's).
        channels_last: convert the model (for good: it is not converted back) and the inputs
            to the channels-last memory format, which oneDNN and cuDNN convolutions run
            faster (about 1.5x on CPU). Leave it off for a model that is being trained.
        progress: show a tqdm bar with images/s.
        precision: ``'fp32'``, ``'bf16'`` or ``'auto'`` (bf16 autocast where the device
            computes bf16 natively, see :mod:`ssd.precision`); ``amp`` takes precedence.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    core = unwrap_model(model)
    if device is None:
        device = next(core.parameters()).device
    device = torch.device(device)
    core.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        core.to(memory_format=torch.channels_last)
    num_classes = int(core.num_classes)
    n = len(dataset)
    all_boxes: list[list[np.ndarray]] = [[np.zeros((0, 5), np.float32)] * n
                                         for _ in range(num_classes)]
    loader = DataLoader(EvalImages(dataset), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_eval,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    use_amp = bool(amp) and device.type == "cuda"
    run_precision = "fp32" if use_amp else resolve_precision(precision, device.type)
    forward_s = 0.0
    _sync(device)
    start = time.perf_counter()
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)
    with detection_mode(model, top_k=top_k, conf_thresh=conf_thresh, nms_thresh=nms_thresh) \
            as net, torch.inference_mode():
        for imgs, idx, sizes in loader:
            t0 = time.perf_counter()
            imgs = imgs.to(device, non_blocking=True).contiguous(memory_format=fmt)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp), \
                    autocast(run_precision, device.type):
                dets = net(imgs)
            per_image = split_detections(dets, sizes)  # syncs: copies to the CPU
            forward_s += time.perf_counter() - t0
            for b, i in enumerate(idx.tolist()):
                for c in range(1, num_classes):
                    all_boxes[c][i] = per_image[b][c]
            bar.update(len(idx))
    bar.close()
    _sync(device)
    seconds = time.perf_counter() - start
    return InferenceResult(all_boxes, n, seconds, str(device),
                           {"model_s": forward_s, "batch_size": batch_size,
                            "num_workers": num_workers, "amp": use_amp,
                            "channels_last": bool(channels_last),
                            "precision": "fp16" if use_amp else run_precision})
