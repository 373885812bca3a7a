"""Test-time transform: resize and subtract the BGR means (ssd.pytorch's BaseTransform)."""

from __future__ import annotations

from typing import Any, Sequence, Union

import cv2
import numpy as np

from ..config import MEANS

Size = Union[int, Sequence[int]]


def _wh(size: Size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    w, h = size
    return int(w), int(h)


def subtract_mean(image: np.ndarray, mean: Sequence[float]) -> np.ndarray:
    """``float32(image) - mean`` per channel, ``[H, W, 3]`` -> float32 ``[H, W, 3]``."""
    if image.dtype == np.uint8:
        return cv2.subtract(image, (*map(float, mean), 0.0), dtype=cv2.CV_32F)
    return image.astype(np.float32) - np.asarray(mean, dtype=np.float32)


def base_transform(image: np.ndarray, size: Size, mean: Sequence[float]) -> np.ndarray:
    """Resize to ``size`` (cv2 bilinear) and subtract ``mean``: float32 ``[S, S, 3]`` BGR."""
    return subtract_mean(cv2.resize(image, _wh(size), interpolation=cv2.INTER_LINEAR), mean)


class BaseTransform:
    """``(img, boxes, labels) -> (resized img - mean, boxes, labels)``; boxes unchanged.

    The image stays BGR (the dataset reorders to RGB, see LAYOUT.md's model input). ``size`` is
    an int (square) or ``(width, height)``.
    """

    def __init__(self, size: Size, mean: Sequence[float] = MEANS) -> None:
        self.size = size
        self.mean = tuple(float(m) for m in mean)

    def __call__(self, image: np.ndarray, boxes: Any | None = None,
                 labels: Any | None = None) -> tuple[np.ndarray, Any, Any]:
        return base_transform(image, self.size, self.mean), boxes, labels

    def __repr__(self) -> str:
        return f"BaseTransform(size={self.size}, mean={self.mean})"
