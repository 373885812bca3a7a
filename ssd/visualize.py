"""Drawing detections on images (RGB arrays, ready for ``matplotlib.pyplot.imshow``)."""

from __future__ import annotations

import colorsys
import os
from typing import Any, Mapping, Sequence, Union

import cv2
import numpy as np

__all__ = ["class_color", "draw_detections", "read_rgb"]

PathLike = Union[str, "os.PathLike[str]"]


def read_rgb(path: PathLike) -> np.ndarray:
    """Read an image file as an RGB uint8 ``[H, W, 3]`` array, pixels as stored (EXIF
    orientation ignored, like the datasets and :class:`ssd.Detector`, so boxes line up)."""
    from .data.image_io import read_image

    return cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)


def class_color(label: int) -> tuple[int, int, int]:
    """A bright RGB colour per class, well spread around the hue circle (golden-ratio steps)."""
    hue = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _as_rgb_uint8(image: Any) -> np.ndarray:
    from .data.image_io import load_bgr_image  # the predictors' conversion rules

    return np.ascontiguousarray(load_bgr_image(image)[0][:, :, ::-1])


def _field(result: Any, name: str) -> Any:
    if isinstance(result, Mapping):
        return result.get(name)
    return getattr(result, name, None)


def draw_detections(image: Any, result: Any, class_names: Sequence[str] | None = None, *,
                    threshold: float = 0.0, thickness: int | None = None,
                    font_scale: float | None = None) -> np.ndarray:
    """Draw boxes with ``"<class> <score>"`` labels.

    Args:
        image: an RGB ``[H, W, 3]`` array (uint8, or float in [0, 1]), a grayscale ``[H, W]``
            one, or an image path.
        result: a :class:`ssd.detector.Detections` (or its ``to_dict()``): ``boxes`` ``[n, 4]``
            xyxy pixels, ``scores`` ``[n]``, ``labels`` ``[n]`` and optionally ``class_names``
            (one per box).
        class_names: names indexed by label, used when ``result`` has no per-box names.
        threshold: draw only boxes scoring at least this.
        thickness, font_scale: line width and text size (default: scaled to the image).

    Returns:
        A new RGB uint8 array of the image's height and width; the input is not modified.
    """
    canvas = _as_rgb_uint8(image)
    h, w = canvas.shape[:2]
    boxes = np.asarray(_field(result, "boxes") if _field(result, "boxes") is not None else [],
                       dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(_field(result, "scores") if _field(result, "scores") is not None
                        else np.ones(len(boxes)), dtype=np.float64).reshape(-1)
    labels = np.asarray(_field(result, "labels") if _field(result, "labels") is not None
                        else np.zeros(len(boxes)), dtype=np.int64).reshape(-1)
    names = _field(result, "class_names")
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"boxes, scores and labels differ in length: {len(boxes)}, "
                         f"{len(scores)}, {len(labels)}")
    if thickness is None:
        thickness = max(1, round(min(h, w) / 250))
    if font_scale is None:
        font_scale = max(0.35, min(h, w) / 800)
    font = cv2.FONT_HERSHEY_SIMPLEX
    text_thick = max(1, thickness // 2)
    # Lowest scores first, so the best boxes and labels end up on top.
    for k in np.argsort(scores, kind="stable"):
        if scores[k] < threshold:
            continue
        label = int(labels[k])
        if names is not None and len(names) == len(boxes):
            name = str(names[k])
        elif class_names is not None and 0 <= label < len(class_names):
            name = str(class_names[label])
        else:
            name = str(label)
        x1, y1, x2, y2 = np.clip(boxes[k], [0, 0, 0, 0], [w - 1, h - 1, w - 1, h - 1])
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        color = class_color(label)
        cv2.rectangle(canvas, p1, p2, color, thickness, cv2.LINE_AA)
        text = f"{name} {scores[k]:.2f}"
        (tw, th), base = cv2.getTextSize(text, font, font_scale, text_thick)
        # Label above the box, or inside it when the box touches the top edge.
        top = p1[1] - th - base - 2 if p1[1] - th - base - 2 >= 0 else p1[1]
        left = min(p1[0], max(0, w - tw - 2))
        cv2.rectangle(canvas, (left, top), (left + tw + 2, top + th + base + 2), color, -1)
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        cv2.putText(canvas, text, (left + 1, top + th + 1), font, font_scale, ink, text_thick,
                    cv2.LINE_AA)
    return canvas
