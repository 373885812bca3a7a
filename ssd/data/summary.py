"""What a dataset build kept, ignored and dropped, as counts and one log line.

Datasets count per image (:class:`ImageCounts`) from the annotations alone (no image is
decoded); :func:`summarize` adds them up into a :class:`DatasetSummary` and
:func:`report_datasets` logs one line per dataset and refuses a training set without a
single usable box.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

logger = logging.getLogger("ssd.data")

__all__ = ["OTHER_CLASSES_MODES", "DatasetSummary", "ImageCounts", "NoUsableBoxError",
           "check_other_classes", "leave_out_reason", "report_datasets",
           "voc_other_classes", "summarize"]

# What a dataset does with objects whose class is not in its class list.
OTHER_CLASSES_MODES = ("error", "ignore", "drop")

# Why an image is dropped, as the summary names it.
OTHER_CLASSES = "objects of other classes"
NO_BOX = "no box of the classes"


class NoUsableBoxError(ValueError):
    """A training dataset holds no box of its classes (the message names root, sets, classes)."""


def check_other_classes(mode: str) -> str:
    """``mode`` if it is one of :data:`OTHER_CLASSES_MODES`, else a :class:`ValueError`."""
    if mode not in OTHER_CLASSES_MODES:
        raise ValueError(f"other_classes must be one of {', '.join(OTHER_CLASSES_MODES)}, "
                         f"not {mode!r}")
    return mode


def voc_other_classes(flag: str | None, train: bool) -> dict[str, Any]:
    """The dataset arguments for ``train.py --other_classes``.

    Training: ``'ignore'`` ignores the objects and leaves out the images left without a box
    (they add no loss); ``'drop'`` (the default) leaves out every image holding an object of
    another class; ``'error'`` makes such objects an error (those images are skipped with a
    warning when loaded). Validation keeps every image and ignores the objects, unless
    ``'error'``: leaving images out would hide false positives.
    """
    if flag == "error":
        return {"other_classes": "error"}
    if not train:
        return {"other_classes": "ignore"}
    flag = flag or "drop"
    return {"other_classes": flag, "drop_empty": flag == "ignore"}


def leave_out_reason(other_classes: str, drop_empty: bool,
                     counts: ImageCounts | None) -> str | None:
    """Why a dataset built with ``other_classes`` and ``drop_empty`` leaves an image out of its
    ids, or ``None`` to keep it. Uncounted images and images with problems are kept:
    ``skip_bad`` (or an error) handles those when they are loaded."""
    if counts is None or counts.problem is not None:
        return None
    if other_classes == "drop" and counts.other:
        return OTHER_CLASSES
    if drop_empty and counts.kept == 0:
        return NO_BOX
    return None


@dataclass
class ImageCounts:
    """One image's annotation, counted.

    Attributes:
        kept: boxes of the dataset's classes that training sees.
        other: class names (or category ids) of objects not in the class list.
        difficult: VOC difficult objects skipped.
        crowd: COCO crowd annotations skipped.
        no_area: boxes with no area inside the image, dropped.
        problem: why the whole image is dropped (``None``: it is kept).
    """

    kept: int = 0
    other: list[str] = field(default_factory=list)
    difficult: int = 0
    crowd: int = 0
    no_area: int = 0
    problem: str | None = None


@dataclass
class DatasetSummary:
    """Counts over a dataset's images (objects are counted in kept images only)."""

    name: str
    source: str
    images: int = 0
    kept_images: int = 0
    images_without_boxes: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> images
    objects: int = 0
    other: Counter = field(default_factory=Counter)  # class name -> objects ignored
    difficult: int = 0
    crowd: int = 0
    no_area: int = 0
    counted: bool = True  # False: a custom target transform, objects not counted

    @property
    def dropped_images(self) -> int:
        return sum(self.dropped.values())

    def add(self, counts: ImageCounts | None) -> None:
        self.images += 1
        if counts is None:
            self.counted = False
            self.kept_images += 1
            return
        if counts.problem is not None:
            self.dropped[counts.problem] += 1
            return
        self.kept_images += 1
        self.images_without_boxes += counts.kept == 0
        self.objects += counts.kept
        self.other.update(counts.other)
        self.difficult += counts.difficult
        self.crowd += counts.crowd
        self.no_area += counts.no_area

    def line(self) -> str:
        """The one-line summary that is logged."""
        text = (f"dataset {self.name} ({self.source}): {self.images} images: "
                f"{self.kept_images} kept")
        if self.counted:
            text += (f" ({self.kept_images - self.images_without_boxes} with boxes, "
                     f"{self.images_without_boxes} without)")
        text += f", {self.dropped_images} dropped"
        if self.dropped:
            text += " (" + ", ".join(f"{n} with {why}" for why, n in
                                     self.dropped.most_common()) + ")"
        if not self.counted:
            return text + "; objects not counted (custom target_transform)"
        text += (f"; objects: {self.objects} kept, {sum(self.other.values())} of other classes "
                 f"ignored")
        if self.other:
            text += " (" + _top(self.other) + ")"
        if self.difficult:
            text += f", {self.difficult} difficult skipped"
        if self.crowd:
            text += f", {self.crowd} crowd skipped"
        text += f", {self.no_area} without area dropped"
        if self.dropped.get(OTHER_CLASSES):
            text += ("; to keep the images that hold objects of other classes and ignore those "
                     "objects, use other_classes='ignore' (train.py --other_classes ignore)")
        return text


def _top(counter: Counter, n: int = 5) -> str:
    items = counter.most_common()
    text = ", ".join(f"{name} {count}" for name, count in items[:n])
    return text + (f", {len(items) - n} more" if len(items) > n else "")


def summarize(name: str, source: str, counts: Iterable[ImageCounts | None],
              dropped: Mapping[str, int] | None = None) -> DatasetSummary:
    """Add up per-image counts; ``dropped`` adds images left out before (reason -> count)."""
    s = DatasetSummary(name=name, source=source)
    for c in counts:
        s.add(c)
    for why, n in (dropped or {}).items():
        s.dropped[why] += n
        s.images += n
    return s


def report_datasets(datasets: Sequence[Any], require_boxes: bool = False,
                    log: Callable[..., None] | None = None) -> list[DatasetSummary]:
    """Log each dataset's :meth:`summary` line; with ``require_boxes``, refuse a set of
    datasets that together hold no usable box.

    Raises:
        NoUsableBoxError: ``require_boxes`` and not one box was kept (the message names each
            dataset's root, image sets and classes and what happened to its objects).
    """
    log = log or logger.info
    summaries = [ds.summary() for ds in datasets]
    for s in summaries:
        log("%s", s.line())
    counted = all(s.counted for s in summaries)
    if require_boxes and counted and sum(s.objects for s in summaries) == 0:
        details = "; ".join(s.line() for s in summaries)
        raise NoUsableBoxError(
            "no usable box to train on: not one object of the dataset's classes is left "
            f"(check the classes, the image sets and the dataset root). {details}")
    return summaries
