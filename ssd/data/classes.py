"""Class-name lists: the 20 VOC classes, the 80 COCO classes (and their 90 category-id slots),
and user class-list files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence, Union

# Label i (0-based, background excluded) is VOC_CLASSES[i]; alphabetical, as in ssd.pytorch.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# The 80 COCO detection classes in category-id order; COCO_CATEGORY_IDS[i] is the official
# category id of COCO_CLASSES[i] (ids 1..90 with gaps).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)

# A label slot no class uses (torchvision's name for COCO's unused category ids); it may repeat.
UNUSED_CLASS = "N/A"


def _coco91_classes() -> tuple[str, ...]:
    by_id = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    return tuple(by_id.get(i, UNUSED_CLASS) for i in range(1, 91))


# The 90 foreground slots of torchvision's COCO detectors (91 outputs with the background):
# label l (1-based) is COCO category id l, and the ten ids COCO does not use are "N/A".
COCO91_CLASSES = _coco91_classes()

ClassSpec = Union[str, "os.PathLike[str]", Sequence[str], None]


def load_class_names(path: Union[str, os.PathLike[str]]) -> tuple[str, ...]:
    """Read a class-list file: one class name per line, in label order.

    Blank lines and lines starting with ``#`` are ignored; names are stripped. The background
    class is implicit (label 0 of the network) and must not be listed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"class list file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read class list file {path}: {e}") from e
    names = [line.strip() for line in text.splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    return check_class_names(names, source=str(path))


def check_class_names(names: Iterable[str], source: str = "class list") -> tuple[str, ...]:
    """Validate a sequence of class names (non-empty strings, unique ignoring case, except the
    placeholder :data:`UNUSED_CLASS` of unused label slots)."""
    out = tuple(names)
    if not out:
        raise ValueError(f"{source}: no class names")
    seen: dict[str, str] = {}
    for n in out:
        if not isinstance(n, str) or not n.strip():
            raise ValueError(f"{source}: class names must be non-empty strings, got {n!r}")
        key = n.strip().lower()
        if key in ("__background__", "background"):
            raise ValueError(f"{source}: do not list the background class ({n!r}); it is "
                             "label 0 of the network and is added implicitly")
        if n.strip() == UNUSED_CLASS:
            continue
        if key in seen:
            raise ValueError(f"{source}: class {n!r} is listed twice")
        seen[key] = n
    return tuple(n.strip() for n in out)


def resolve_classes(classes: ClassSpec, default: Sequence[str] = VOC_CLASSES) -> tuple[str, ...]:
    """Class names from ``None`` (``default``), a path to a class-list file, or a sequence."""
    if classes is None:
        return tuple(default)
    if isinstance(classes, (str, os.PathLike)):
        return load_class_names(classes)
    return check_class_names(classes)


def class_to_index(classes: Sequence[str]) -> dict[str, int]:
    """``{lower-cased name: label}`` as annotation names are matched (lower-cased, stripped)."""
    return {n.strip().lower(): i for i, n in enumerate(classes)}
