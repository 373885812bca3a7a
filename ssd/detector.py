"""Notebook API: a trained SSD as a callable detector.

>>> from ssd import Detector
>>> from ssd.visualize import draw_detections
>>> det = Detector.from_checkpoint("weights/ssd300_mAP_77.43_v2.pth", config="voc300")
>>> result = det.predict("photo.jpg", threshold=0.5)
>>> result.boxes, result.scores, result.class_names   # xyxy pixels of photo.jpg
>>> plt.imshow(draw_detections("photo.jpg", result))

Arrays passed to :meth:`Detector.predict` are **RGB** (the matplotlib / PIL convention:
``plt.imread``, ``np.asarray(PIL.Image.open(...))``); file paths are read from disk. The
network itself gets what it was trained on (BGR mean subtraction, then RGB order).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from .checks import check_fraction
from .config import MEANS, get_config
from .data.image_io import load_bgr_image
from .detections import Detections, collect_detections, to_dicts
from .evaluation.inference import detection_mode, resolve_device, split_detections
from .precision import autocast, resolve_precision

__all__ = ["Detections", "Detector", "collect_detections", "default_class_names", "load_model",
           "to_dicts"]

PathLike = Union[str, "os.PathLike[str]"]
ImageInput = Union[PathLike, np.ndarray, Any]


def default_class_names(config: str | Mapping[str, Any]) -> tuple[str, ...]:
    """The class names that go with a built-in config: VOC's 20, COCO's 80, or the 90 COCO
    category-id slots of a 91-output COCO config (torchvision's)."""
    from .data.classes import COCO91_CLASSES, COCO_CLASSES, VOC_CLASSES

    cfg = get_config(config)
    if not str(cfg.get("name", "")).upper().startswith("COCO"):
        return VOC_CLASSES
    return COCO91_CLASSES if cfg.get("num_classes") == len(COCO91_CLASSES) + 1 else COCO_CLASSES


def load_model(checkpoint: PathLike | Mapping[str, Any], config: str | Mapping[str, Any],
               num_classes: int, device: torch.device, *, top_k: int = 200,
               conf_thresh: float = 0.01, nms_thresh: float = 0.45,
               hints: str = "python") -> nn.Module:
    """Build a test-phase SSD for ``config`` with ``num_classes`` (background included), load
    ``checkpoint`` (a file or a state dict; any form :mod:`ssd.weights` reads) and put it in
    eval mode on ``device``. ``hints``: whose advice a mismatch error gives (``"python"`` or
    ``"cli"``, see :func:`ssd.weights.load_ssd_weights`).

    Raises:
        FileNotFoundError: the checkpoint file does not exist.
        ssd.weights.WeightsMismatchError: the checkpoint is for another size or class count
            (the message says which).
    """
    from .model import build_ssd
    from .weights import load_ssd_weights
    from .weights.loading import missing_weights_message

    if isinstance(checkpoint, (str, os.PathLike)) and not os.path.isfile(checkpoint):
        raise FileNotFoundError(missing_weights_message(checkpoint))
    model = build_ssd("test", cfg=config, num_classes=num_classes, top_k=top_k,
                      conf_thresh=conf_thresh, nms_thresh=nms_thresh)
    load_ssd_weights(model, checkpoint, hints=hints)
    return model.to(device).eval()


class Detector:
    """A trained SSD that takes images and returns :class:`Detections`.

    Args:
        model: an SSD (it is put in the test phase and eval mode).
        class_names: the foreground class names, in label order.
        device: where to run (default: the model's device).
        batch_size: images per forward pass in :meth:`predict`.
        mean: BGR means the network was trained with (default: the model config's
            ``normalize`` rule if it has one, else :data:`ssd.config.MEANS`; see
            :func:`ssd.data.normalize.input_transform`).
        channels_last: convert the model to the channels-last memory format (faster
            convolutions on CPU and GPU; the model is changed in place). Default: the model
            config's ``channels_last``, else true.
        precision: ``'fp32'`` (default), ``'bf16'`` or ``'auto'``: bf16 autocast where the
            device computes bf16 natively (see :mod:`ssd.precision`; ``'bf16'`` elsewhere
            warns and runs fp32).
    """

    def __init__(self, model: nn.Module, class_names: Sequence[str],
                 device: str | torch.device | None = None, batch_size: int = 8,
                 mean: Sequence[float] | None = None, channels_last: bool | None = None,
                 precision: str = "fp32") -> None:
        from .data.normalize import input_transform

        num_classes = int(getattr(model, "num_classes", len(class_names) + 1))
        if num_classes != len(class_names) + 1:
            raise ValueError(f"the model has {num_classes} classes (background included) but "
                             f"{len(class_names)} class names were given; pass "
                             f"{num_classes - 1} names")
        self.device = torch.device(device) if device is not None else \
            next(model.parameters()).device
        self.model = model.to(self.device).eval()
        cfg = getattr(model, "cfg", None) or {}
        if channels_last is None:
            channels_last = bool(cfg.get("channels_last", True))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.class_names = [str(n) for n in class_names]
        self.batch_size = int(batch_size)
        self.size = int(getattr(model, "size", 300))
        self.mean = tuple(float(m) for m in (mean if mean is not None else MEANS))
        self._to_input = input_transform(cfg, self.size, mean)
        self.precision = resolve_precision(precision, self.device.type)

    @classmethod
    def from_checkpoint(cls, path: PathLike, config: str | Mapping[str, Any] | None = None,
                        classes: PathLike | Sequence[str] | None = None,
                        device: str | torch.device = "auto", *, conf_thresh: float = 0.01,
                        nms_thresh: float = 0.45, top_k: int = 200,
                        batch_size: int = 8, precision: str = "fp32") -> Detector:
        """Load a checkpoint (plain ssd.pytorch state dict, ``module.``-prefixed, a training
        checkpoint with a ``'model'`` entry, or a file written by
        :func:`ssd.weights.save_weights_file` or ``train.py``, which carry their config and
        class names) or a pretrained model by its zoo name (see :meth:`from_pretrained`).

        Args:
            path: the ``.pth`` file, or a name from ``python -m ssd.weights list``.
            config: ``'voc300'``, ``'voc512'``, ``'coco300'``, ``'coco512'`` or a config dict;
                default: the file's own config, else ``'voc300'``.
            classes: class names (a list or a class-list file, one name per line); default the
                file's own names, else the config's dataset classes (VOC's 20 or COCO's 80).
            device: ``'auto'`` (CUDA if available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``...
            conf_thresh, nms_thresh, top_k: the network's detection settings (per class).
            batch_size: images per forward pass.
            precision: ``'fp32'``, ``'bf16'`` or ``'auto'`` (see the class).
        """
        from .data.classes import resolve_classes
        from .weights.loading import missing_weights_message

        check_fraction(conf_thresh, "conf_thresh")
        check_fraction(nms_thresh, "nms_thresh")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        from .weights.zoo import ZOO, read_weights

        if os.fspath(path) not in ZOO and not os.path.isfile(path):
            raise FileNotFoundError(missing_weights_message(path))
        found = read_weights(path)
        config = config if config is not None else (found.config or "voc300")
        names = resolve_classes(classes, found.class_names or default_class_names(config))
        dev = resolve_device(device)
        model = load_model(found.state_dict, config, len(names) + 1, dev, top_k=top_k,
                           conf_thresh=conf_thresh, nms_thresh=nms_thresh)
        return cls(model, names, dev, batch_size=batch_size, precision=precision)

    def _preprocess(self, bgr: np.ndarray) -> torch.Tensor:
        return self._to_input(bgr)

    def predict(self, images: ImageInput | Sequence[ImageInput], threshold: float = 0.5,
                as_dict: bool = False) -> Any:
        """Detect objects.

        Args:
            images: a file path, an RGB ``[H, W, 3]`` array, a PIL image (any mode), or a
                list of these. Arrays may be gray ``[H, W]``/``[H, W, 1]``, RGBA, uint8,
                uint16, other integers, bool, or float in [0, 1] or [0, 255]; they are
                converted as the same picture read from a file is (the rules are in
                :mod:`ssd.data.pixels`).
            threshold: keep detections scoring at least this (in [0, 1]).
            as_dict: return plain dicts (:meth:`Detections.to_dict`) instead.

        Returns:
            One :class:`Detections` (or dict) for a single image, a list for a list.
        """
        threshold = check_fraction(threshold, "threshold")
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        out: list[Detections] = []
        for start in range(0, len(items), self.batch_size):
            chunk = [load_bgr_image(im) for im in items[start:start + self.batch_size]]
            batch = torch.stack([self._preprocess(bgr) for bgr, _ in chunk]).to(self.device)
            batch = batch.contiguous(memory_format=self.memory_format)
            sizes = torch.tensor([bgr.shape[:2] for bgr, _ in chunk], dtype=torch.long)
            with detection_mode(self.model) as net, torch.inference_mode(), \
                    autocast(self.precision, self.device.type):
                per_image = split_detections(net(batch), sizes)
            for (bgr, path), dets in zip(chunk, per_image):
                out.append(collect_detections(dets, bgr.shape[:2], threshold,
                                              self.class_names, path))
        if as_dict:
            dicts = to_dicts(out)
            return dicts[0] if single else dicts
        return out[0] if single else out

    __call__ = predict

    @classmethod
    def from_pretrained(cls, name: str, device: str | torch.device = "auto",
                        **kwargs: Any) -> Detector:
        """A detector with the zoo weights ``name`` (``python -m ssd.weights list``), downloaded
        into ``$SSD_HOME`` on first use and reused afterwards without network access.

        >>> det = Detector.from_pretrained("ssd300_coco")

        ``kwargs`` are those of :meth:`from_checkpoint` (``conf_thresh``, ``batch_size``, ...).
        """
        from .weights.zoo import entry

        if entry(name).kind != "ssd":
            raise ValueError(f"{name} is a base network for training (train.py --basenet "
                             f"{name}), not a detector")
        return cls.from_checkpoint(name, device=device, **kwargs)

    def __repr__(self) -> str:
        return (f"Detector(SSD{self.size}, {len(self.class_names)} classes, "
                f"device={self.device})")
