"""What VOC and COCO datasets share: ssd.pytorch's item methods and ``skip_bad`` handling."""

from __future__ import annotations

import logging
import warnings
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import BadSampleError, DataWarning

logger = logging.getLogger("ssd.data")

Transform = Callable[..., Any]


class DetectionDataset(Dataset):
    """Base class: subclasses implement ``_load(index) -> (bgr_uint8_image, target)``.

    ``target`` is what the target transform returned (a list of ``[x1, y1, x2, y2, label]``
    rows in [0, 1] for the built-in ones). Items follow ssd.pytorch:

    * ``dataset[i]`` -> ``(image, target)``; with a ``transform``, ``image`` is a ``[3, H, W]``
      float32 RGB tensor (the transform's BGR output reordered) and ``target`` a float32
      ``[n, 5]`` array (``n`` may be 0); without one, ``image`` is the raw ``[3, H, W]`` uint8
      tensor in BGR order (as ssd.pytorch returned it) and ``target`` a float32 ``[n, 5]``
      array.
    * ``pull_item(i)`` -> ``(image, target, height, width)`` of the original image.
    * ``pull_image(i)`` -> the ``[H, W, 3]`` uint8 BGR array (``cv2.imread`` layout).
    * ``pull_tensor(i)`` -> ``torch.Tensor(pull_image(i)).unsqueeze_(0)`` (float32).

    With ``skip_bad=True``, ``dataset[i]`` replaces a sample whose files are bad
    (:class:`BadSampleError`) by the next good one, logs a warning naming the file and the
    reason, and remembers it in :attr:`bad_samples` (``num_skipped`` counts them; in a
    DataLoader each worker process keeps its own count). ``pull_*`` methods always raise, so
    evaluation never scores a substituted image.
    """

    transform: Transform | None
    target_transform: Transform | None
    skip_bad: bool
    name: str

    def __init__(self) -> None:
        self.bad_samples: dict[int, str] = {}

    # --- subclass interface -------------------------------------------------------------
    def _load(self, index: int) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def pull_image(self, index: int) -> np.ndarray:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    @property
    def num_skipped(self) -> int:
        """How many distinct bad samples this process has skipped."""
        return len(self.bad_samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} ({n} samples)")
        index %= n
        if not self.skip_bad:
            im, gt, _, _ = self.pull_item(index)
            return im, gt
        for step in range(n):
            i = (index + step) % n
            if i in self.bad_samples:
                continue
            try:
                im, gt, _, _ = self.pull_item(i)
            except BadSampleError as e:
                self.bad_samples[i] = str(e)
                logger.warning("skipping bad sample %d of %s: %s", i, self.name, e)
                continue
            return im, gt
        raise BadSampleError(f"{self.name}: every one of its {n} samples is bad "
                             f"(first: {next(iter(self.bad_samples.values()), 'none')})")

    def pull_item(self, index: int) -> tuple[torch.Tensor, Any, int, int]:
        img, target = self._load(index)
        height, width = img.shape[:2]
        if isinstance(target, (list, tuple, np.ndarray)):
            target = as_target_array(target)
        if self.transform is None:
            return torch.from_numpy(img).permute(2, 0, 1), target, height, width
        target = as_target_array(target)
        img, boxes, labels = self.transform(img, target[:, :4], target[:, 4])
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
        target = np.hstack((boxes, labels))
        return to_chw_rgb_tensor(img), target, height, width

    def pull_tensor(self, index: int) -> torch.Tensor:
        return torch.Tensor(self.pull_image(index)).unsqueeze_(0)


def as_target_array(target: Any) -> np.ndarray:
    """Rows ``[x1, y1, x2, y2, label]`` as a float32 ``[n, 5]`` array (``[0, 5]`` when empty)."""
    return np.asarray(target, dtype=np.float32).reshape(-1, 5)


def to_chw_rgb_tensor(img: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` BGR array -> contiguous ``[3, H, W]`` RGB float32 tensor (one copy)."""
    chw = np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[::-1])
    return torch.from_numpy(chw)


def clip_box(x1: float, y1: float, x2: float, y2: float, max_x: float,
             max_y: float) -> tuple[float, float, float, float] | None:
    """Corners clamped to ``[0, max_x] x [0, max_y]``; ``None`` when no area is left."""
    x1, x2 = min(max(x1, 0.0), max_x), min(max(x2, 0.0), max_x)
    y1, y2 = min(max(y1, 0.0), max_y), min(max(y2, 0.0), max_y)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


def warn_dropped(source: str, dropped: int) -> None:
    """One warning per annotation for the boxes :func:`clip_box` rejected."""
    if dropped:
        warnings.warn(f"{source}: dropped {dropped} box(es) with no area inside the image",
                      DataWarning, stacklevel=3)
