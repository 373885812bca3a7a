"""PASCAL VOC and custom VOC-format datasets (``VOCdevkit/VOC<year>/{Annotations,JPEGImages}``)."""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from .base import DetectionDataset, Transform, clip_box, warn_dropped
from .classes import VOC_CLASSES, ClassSpec, class_to_index, resolve_classes
from .errors import BadSampleError, MissingFileError, UnknownClassError, describe
from .image_io import read_image
from .summary import (
    OTHER_CLASSES,
    DatasetSummary,
    ImageCounts,
    check_other_classes,
    leave_out_reason,
    summarize,
)

# Default dataset root: $SSD_VOC_ROOT, else ~/data/VOCdevkit/ (trailing separator kept, as
# ssd.pytorch code concatenates strings onto it). Environment only: no disk access at import.
VOC_ROOT = os.environ.get("SSD_VOC_ROOT") or os.path.join(
    os.path.expanduser("~"), "data", "VOCdevkit", "")

ImageSets = Union[Sequence[tuple[str, str]], tuple[str, str], Sequence[str], str]


class _Default:
    def __repr__(self) -> str:
        return "<default>"


DEFAULT = _Default()


def _number(text: str | None) -> float:
    """Coordinate text -> number: ``int()`` for integer strings (ssd.pytorch), else float."""
    if text is None:
        raise ValueError("missing")
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not finite: {text!r}")
    return value


def xml_image_size(root: ET.Element) -> tuple[int, int] | None:
    """``(width, height)`` from an annotation's ``<size>``, or None if absent/zero/invalid."""
    size = root.find("size")
    if size is None:
        return None
    try:
        w, h = int(_number(size.findtext("width"))), int(_number(size.findtext("height")))
    except ValueError:
        return None
    return (w, h) if w > 0 and h > 0 else None


class VOCAnnotationTransform:
    """VOC XML annotation -> list of ``[x1, y1, x2, y2, label]`` rows (ssd.pytorch's rule).

    Coordinates are the XML's pixel coordinates minus 1, divided by ``width``/``height``;
    ``label`` indexes the class list. Difficult objects are dropped unless ``keep_difficult``.
    Boxes reaching outside the image are clipped to it (0-based pixel range ``[0, W-1]``, the
    range a correct VOC box has after the minus 1); boxes left with no area are dropped with a
    :class:`DataWarning` (once per file).

    Args:
        class_to_ind: ``{name: label}``; names are matched lower-cased. Default: the 20 VOC
            classes in alphabetical order.
        keep_difficult: keep objects marked ``<difficult>1</difficult>``.
        unknown: ``'error'`` (default) raises :class:`UnknownClassError` naming the file and the
            class for a name missing from ``class_to_ind``; ``'ignore'`` drops such objects
            (to train on a subset of the annotated classes).
    """

    def __init__(self, class_to_ind: Mapping[str, int] | None = None,
                 keep_difficult: bool = False, unknown: str = "error") -> None:
        if unknown not in ("error", "ignore"):
            raise ValueError(f"unknown must be 'error' or 'ignore', not {unknown!r}")
        if class_to_ind is None:
            class_to_ind = class_to_index(VOC_CLASSES)
        self.class_to_ind = {str(k).strip().lower(): int(v) for k, v in class_to_ind.items()}
        self.keep_difficult = keep_difficult
        self.unknown = unknown

    def __call__(self, target: Union[ET.Element, ET.ElementTree], width: float, height: float,
                 *, image_size: tuple[int, int] | None = None,
                 source: str | None = None) -> list[list[float]]:
        """Parse one annotation.

        Args:
            target: the XML root element (or tree).
            width, height: divisors of the x and y coordinates (1, 1 gives pixel coordinates).
            image_size: ``(W, H)`` in pixels to clip boxes to; default the XML's ``<size>``,
                else ``(width, height)`` unless both are 1 (then only negative coordinates
                are clipped, to 0).
            source: file name used in messages (default: the XML's ``<filename>``).
        """
        source = source or _xml_source(target)
        rows, counts, first_other = self._parse(target, width, height, image_size, source)
        if first_other is not None and self.unknown == "error":
            k, name = first_other
            known = ", ".join(sorted(self.class_to_ind))
            raise UnknownClassError(f"{source}: unknown class name {name!r} (object {k}); "
                                    f"known classes: {known}", path=source)
        warn_dropped(source, counts.no_area)
        return rows

    def count(self, target: Union[ET.Element, ET.ElementTree], width: float, height: float,
              *, image_size: tuple[int, int] | None = None,
              source: str | None = None) -> tuple[list[list[float]], ImageCounts]:
        """Like calling the transform, but objects of other classes are counted (never an
        error) and nothing is warned: the rows plus what happened to each object."""
        source = source or _xml_source(target)
        rows, counts, _ = self._parse(target, width, height, image_size, source)
        return rows, counts

    def _parse(self, target: Union[ET.Element, ET.ElementTree], width: float, height: float,
               image_size: tuple[int, int] | None, source: str
               ) -> tuple[list[list[float]], ImageCounts, tuple[int, str] | None]:
        if isinstance(target, ET.ElementTree):
            target = target.getroot()
        # The image size to clip to; (1, 1) divisors (pixel output) say nothing about it.
        clip = image_size or xml_image_size(target)
        if clip is None and (width, height) != (1, 1):
            clip = (width, height)
        max_x = float(clip[0]) - 1.0 if clip else math.inf
        max_y = float(clip[1]) - 1.0 if clip else math.inf
        res: list[list[float]] = []
        counts = ImageCounts()
        first_other = None
        for k, obj in enumerate(target.iter("object")):
            name = (obj.findtext("name") or "").strip().lower()
            if not name:
                raise BadSampleError(f"{source}: object {k} has no <name>", path=source)
            difficult = (obj.findtext("difficult") or "0").strip().lower()
            if difficult in ("1", "true", "yes") and not self.keep_difficult:
                counts.difficult += 1
                continue
            if name not in self.class_to_ind:
                counts.other.append(name)
                first_other = first_other or (k, name)
                continue
            bbox = obj.find("bndbox")
            if bbox is None:
                raise BadSampleError(f"{source}: object {k} ({name}) has no <bndbox>",
                                     path=source)
            pts = []
            for tag in ("xmin", "ymin", "xmax", "ymax"):
                try:
                    pts.append(_number(bbox.findtext(tag)) - 1)
                except ValueError as e:
                    raise BadSampleError(f"{source}: object {k} ({name}) has a bad <{tag}> "
                                         f"({bbox.findtext(tag)!r}: {e})", path=source) from None
            box = clip_box(*pts, max_x, max_y)
            if box is None:
                counts.no_area += 1
                continue
            x1, y1, x2, y2 = box
            res.append([x1 / width, y1 / height, x2 / width, y2 / height,
                        self.class_to_ind[name]])
        counts.kept = len(res)
        return res, counts, first_other


def _xml_source(target: Union[ET.Element, ET.ElementTree]) -> str:
    root = target.getroot() if isinstance(target, ET.ElementTree) else target
    return root.findtext("filename") or "<annotation>"


def _parse_image_sets(image_sets: ImageSets) -> list[tuple[str, str]]:
    if isinstance(image_sets, str):
        image_sets = [image_sets]
    elif (isinstance(image_sets, tuple) and len(image_sets) == 2
          and all(isinstance(s, str) and ":" not in s for s in image_sets)):
        image_sets = [image_sets]  # a single (year, name) pair
    out = []
    for item in image_sets:
        if isinstance(item, str):
            year, sep, name = item.partition(":")
            if not sep:
                raise ValueError(f"image set {item!r} must be 'YEAR:NAME', e.g. '2007:trainval'")
        else:
            year, name = item
        out.append((str(year), str(name)))
    if not out:
        raise ValueError("no VOC image sets given")
    return out


def _found_sets(root: str) -> str:
    """Describe the VOC years and image sets present under ``root`` (for error messages)."""
    try:
        years = sorted(d for d in os.listdir(root) if d.startswith("VOC"))
    except OSError:
        return f"{root} cannot be listed"
    parts = []
    for y in years:
        main = os.path.join(root, y, "ImageSets", "Main")
        try:
            sets = sorted(f[:-4] for f in os.listdir(main) if f.endswith(".txt") and "_" not in f)
        except OSError:
            sets = []
        parts.append(f"{y}: {', '.join(sets) or 'no ImageSets/Main lists'}")
    return "; ".join(parts) or "no VOC<year> folders"


class VOCDetection(DetectionDataset):
    """VOC detection dataset (ssd.pytorch's interface), also for custom VOC-format data.

    Args:
        root: the ``VOCdevkit`` folder holding ``VOC<year>/``.
        image_sets: ``(year, name)`` pairs (or ``'year:name'`` strings) naming
            ``VOC<year>/ImageSets/Main/<name>.txt`` lists.
        transform: ``transform(img, boxes, labels) -> (img, boxes, labels)``, e.g.
            :class:`~ssd.data.SSDAugmentation` or :class:`~ssd.data.BaseTransform`.
        target_transform: XML root -> rows; default a :class:`VOCAnnotationTransform` for
            ``classes``/``keep_difficult``; ``None`` returns the raw XML element as target.
        dataset_name: the ``name`` attribute.
        classes: class names (a sequence, or a class-list file path); default the 20 VOC
            classes (or the given target transform's). Labels follow this order and
            ``num_classes = len(classes) + 1``.
        keep_difficult: keep difficult objects (default transform only).
        skip_bad: skip bad samples in ``dataset[i]`` instead of raising (see
            :class:`~ssd.data.base.DetectionDataset`).
        image_ext: image file extension in ``JPEGImages``.
        check_size: check the decoded image size against the XML ``<size>``.
        other_classes: what to do with objects whose class is not in ``classes`` (to train
            on a subset of the annotated classes): ``'error'`` (default) makes them an error
            (:class:`~ssd.data.errors.UnknownClassError` naming the file; with ``skip_bad``
            the image is skipped when loaded), ``'ignore'`` keeps the image and treats those
            objects as background (the way to train on a subset), ``'drop'`` leaves every
            image holding such an object out of ``ids`` (the annotations are read once,
            here). Only for the default target transform.
        drop_empty: leave out of ``ids`` the images left without a box (all their objects
            of other classes, difficult or without area). Such images add no loss to SSD
            training (it mines 3 negatives per positive box of the same image), so with
            ``other_classes='ignore'`` on a few classes this saves most of the time. Not for
            evaluation: it would hide false positives.

    :meth:`summary` counts the images and objects kept, ignored and dropped.
    ``ids`` holds ``(VOC<year> folder, image id)`` pairs as in ssd.pytorch.
    """

    def __init__(self, root: Union[str, os.PathLike[str]],
                 image_sets: ImageSets = (("2007", "trainval"), ("2012", "trainval")),
                 transform: Transform | None = None,
                 target_transform: Any = DEFAULT,
                 dataset_name: str = "VOC0712", *,
                 classes: ClassSpec = None, keep_difficult: bool = False,
                 skip_bad: bool = False, image_ext: str = ".jpg",
                 check_size: bool = True, other_classes: str = "error",
                 drop_empty: bool = False) -> None:
        super().__init__()
        self.other_classes = check_other_classes(other_classes)
        if other_classes != "error" and not isinstance(target_transform, _Default):
            raise ValueError("other_classes applies to the default target transform; give "
                             "your VOCAnnotationTransform unknown='ignore' instead")
        self.root = os.fspath(root)
        self.image_set = _parse_image_sets(image_sets)
        self.transform = transform
        self.name = dataset_name
        self.skip_bad = skip_bad
        self.check_size = check_size
        if isinstance(target_transform, _Default):
            self.classes = resolve_classes(classes, VOC_CLASSES)
            target_transform = VOCAnnotationTransform(
                class_to_index(self.classes), keep_difficult=keep_difficult,
                unknown="error" if other_classes == "error" else "ignore")
        elif classes is None and isinstance(target_transform, VOCAnnotationTransform):
            by_label = sorted(target_transform.class_to_ind.items(), key=lambda kv: kv[1])
            self.classes = tuple(name for name, _ in by_label)
        else:
            self.classes = resolve_classes(classes, VOC_CLASSES)
            if (isinstance(target_transform, VOCAnnotationTransform)
                    and target_transform.class_to_ind != class_to_index(self.classes)):
                raise ValueError("classes and target_transform.class_to_ind disagree; "
                                 "give only one of them")
        self.target_transform = target_transform
        self.class_to_ind = class_to_index(self.classes)
        self.num_classes = len(self.classes) + 1
        self._annopath = os.path.join("%s", "Annotations", "%s.xml")
        self._imgpath = os.path.join("%s", "JPEGImages", "%s" + image_ext)
        self.ids = list(self._read_ids())
        if not self.ids:
            raise ValueError(f"VOC image sets {self.image_set} under {self.root} list no images")
        self._dropped: dict[str, int] = {}
        self._counts: dict[tuple[str, str], ImageCounts | None] = {}
        if other_classes == "drop" or drop_empty:
            self._leave_out(drop_empty)

    # --- what was kept, ignored and dropped ----------------------------------------------
    def _leave_out(self, drop_empty: bool) -> None:
        kept = []
        for i, img_id in enumerate(self.ids):
            counts = self._image_counts(i)
            why = leave_out_reason(self.other_classes, drop_empty, counts)
            if why is not None:
                self._dropped[why] = self._dropped.get(why, 0) + 1
                continue
            kept.append(img_id)
            self._counts[img_id] = counts
        self.ids = kept

    def _image_counts(self, index: int) -> ImageCounts | None:
        """Count one image's objects from its annotation (``None``: custom transform)."""
        img_id = self.ids[index]
        if img_id in self._counts:
            return self._counts[img_id]
        tt = self.target_transform
        if not isinstance(tt, VOCAnnotationTransform):
            return None
        try:
            root = self._parse_xml(index)
            _, counts = tt.count(root, 1, 1, image_size=xml_image_size(root),
                                 source=describe(self.annotation_path(index), img_id[1]))
        except BadSampleError:
            return ImageCounts(problem="unreadable or bad annotations")
        if counts.other and tt.unknown == "error":
            counts.problem = OTHER_CLASSES
        return counts

    def summary(self) -> DatasetSummary:
        """Images and objects kept, ignored and dropped (annotations only, no image read)."""
        sets = ",".join(f"{y}:{n}" for y, n in self.image_set)
        source = f"root {self.root}, sets {sets}, classes {', '.join(self.classes)}"
        return summarize(self.name, source, (self._image_counts(i) for i in range(len(self))),
                         self._dropped)

    def _read_ids(self) -> Iterable[tuple[str, str]]:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(
                f"VOC root {self.root} does not exist (pass the VOCdevkit folder, set "
                "SSD_VOC_ROOT, or download VOC with data/scripts/VOC2007.sh)")
        for year, name in self.image_set:
            rootpath = os.path.join(self.root, "VOC" + year)
            list_file = os.path.join(rootpath, "ImageSets", "Main", name + ".txt")
            try:
                with open(list_file, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"VOC image set {year}:{name} not found: {list_file} does not exist; "
                    f"found under {self.root}: {_found_sets(self.root)}") from None
            for line in lines:
                fields = line.split()
                if fields:
                    yield rootpath, fields[0]

    def __len__(self) -> int:
        return len(self.ids)

    # --- per-sample files ----------------------------------------------------------------
    def image_path(self, index: int) -> str:
        return self._imgpath % self.ids[index]

    def annotation_path(self, index: int) -> str:
        return self._annopath % self.ids[index]

    def image_id(self, index: int) -> str:
        return self.ids[index][1]

    def _parse_xml(self, index: int) -> ET.Element:
        path = self.annotation_path(index)
        where = describe(path, self.ids[index][1])
        try:
            return ET.parse(path).getroot()
        except FileNotFoundError:
            raise MissingFileError(f"annotation file not found: {where}", path=path,
                                   sample_id=self.ids[index][1]) from None
        except ET.ParseError as e:
            raise BadSampleError(f"annotation {where} is not valid XML: {e}", path=path,
                                 sample_id=self.ids[index][1]) from None
        except OSError as e:
            raise BadSampleError(f"cannot read annotation {where}: {e}", path=path,
                                 sample_id=self.ids[index][1]) from e

    def _annotate(self, root: ET.Element, index: int, width: float, height: float,
                  image_size: tuple[int, int] | None = None) -> Any:
        tt = self.target_transform
        if tt is None:
            return root
        if isinstance(tt, VOCAnnotationTransform):
            src = describe(self.annotation_path(index), self.ids[index][1])
            return tt(root, width, height, image_size=image_size, source=src)
        return tt(root, width, height)

    def _load(self, index: int) -> tuple[np.ndarray, Any]:
        root = self._parse_xml(index)
        size = xml_image_size(root) if self.check_size else None
        img = read_image(self.image_path(index), self.ids[index][1], expected_size=size)
        height, width = img.shape[:2]
        return img, self._annotate(root, index, width, height, image_size=(width, height))

    # --- ssd.pytorch's accessors ---------------------------------------------------------
    def pull_image(self, index: int) -> np.ndarray:
        """The image as stored, ``[H, W, 3]`` uint8 BGR."""
        return read_image(self.image_path(index), self.ids[index][1])

    def pull_anno(self, index: int) -> list[Any]:
        """``[image_id, [[x1, y1, x2, y2, label], ...]]`` in pixels minus 1 (ssd.pytorch)."""
        root = self._parse_xml(index)
        size = xml_image_size(root) or self.image_size(index)
        return [self.ids[index][1], self._annotate(root, index, 1, 1, image_size=size)]

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of the original image (the XML ``<size>``, else decoded)."""
        size = xml_image_size(self._parse_xml(index))
        if size is None:
            h, w = self.pull_image(index).shape[:2]
            size = (w, h)
        return size

    def __repr__(self) -> str:
        return (f"VOCDetection(root={self.root!r}, image_sets={self.image_set}, "
                f"{len(self)} images, {len(self.classes)} classes)")
