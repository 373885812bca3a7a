"""What a detector returns: :class:`Detections` (one image's boxes, scores and classes).

NumPy only, no torch: the PyTorch :class:`ssd.Detector` and the ONNX Runtime
:class:`ssd.OnnxDetector` both build their results here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np

__all__ = ["Detections", "collect_detections", "to_dicts"]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class Detections:
    """The detections of one image, best first.

    Attributes:
        boxes: float32 ``[n, 4]`` ``(x1, y1, x2, y2)`` in pixels of the original image,
            clipped to ``[0, width] x [0, height]``.
        scores: float32 ``[n]`` class confidences.
        labels: int64 ``[n]`` 0-based class indices (background excluded).
        class_names: ``n`` class names.
        image_size: ``(height, width)`` of the image.
        source: the file path when the image was read from disk.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    image_size: tuple[int, int]
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types (lists, floats, ints, str): JSON-ready."""
        return {
            "boxes": [[float(v) for v in b] for b in self.boxes],
            "scores": [float(s) for s in self.scores],
            "labels": [int(c) for c in self.labels],
            "class_names": list(self.class_names),
            "image_size": [int(self.image_size[0]), int(self.image_size[1])],
            "source": self.source,
        }


def to_dicts(results: Detections | Sequence[Detections]) -> list[dict[str, Any]]:
    """``[r.to_dict() for r in results]`` (a single result gives a one-element list)."""
    if isinstance(results, Detections):
        results = [results]
    return [r.to_dict() for r in results]


def collect_detections(per_class: Sequence[np.ndarray], image_size: tuple[int, int],
                       threshold: float, class_names: Sequence[str],
                       source: str | None = None) -> Detections:
    """One image's :class:`Detections` from its per-class rows.

    Args:
        per_class: ``per_class[c]`` float ``[n, 5]`` ``(x1, y1, x2, y2, score)`` pixel rows of
            class ``c`` (``c = 0``, the background, is ignored), as in ``all_boxes``.
        image_size: ``(height, width)``; boxes are clipped to it.
        threshold: keep rows scoring at least this.
        class_names: foreground names, ``class_names[c - 1]`` for class ``c``.
        source: the image's path, if any.
    """
    h, w = int(image_size[0]), int(image_size[1])
    rows, labels = [np.zeros((0, 5), np.float32)], [np.zeros(0, np.int64)]
    for c in range(1, len(per_class)):
        cls_rows = np.asarray(per_class[c], dtype=np.float32).reshape(-1, 5)
        keep = cls_rows[cls_rows[:, 4] >= threshold]
        rows.append(keep)
        labels.append(np.full(len(keep), c - 1, dtype=np.int64))
    arr, lab = np.concatenate(rows), np.concatenate(labels)
    order = np.argsort(-arr[:, 4], kind="stable")
    arr, lab = arr[order], lab[order]
    boxes = np.clip(arr[:, :4], 0, np.array([w, h, w, h], np.float32)).astype(np.float32)
    return Detections(boxes, arr[:, 4].copy(), lab, [str(class_names[k]) for k in lab], (h, w),
                      source)
