"""COCO-format detection datasets, read through pycocotools (imported on first use)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from typing import Any, Mapping, Sequence, Union

import numpy as np

from .base import DetectionDataset, Transform, clip_box, warn_dropped
from .classes import COCO_CATEGORY_IDS
from .errors import BadSampleError, describe
from .image_io import read_image
from .summary import DatasetSummary, ImageCounts, summarize
from .voc import DEFAULT, _Default

# Default dataset root: $SSD_COCO_ROOT, else ~/data/coco/ (environment only, no disk access).
COCO_ROOT = os.environ.get("SSD_COCO_ROOT") or os.path.join(
    os.path.expanduser("~"), "data", "coco", "")


class COCOAnnotationTransform:
    """COCO annotation dicts of one image -> list of ``[x1, y1, x2, y2, label]`` rows.

    ``bbox`` ``[x, y, w, h]`` becomes corners divided by ``width``/``height``; ``label`` is the
    contiguous 0-based index of the category id. Crowd annotations (``iscrowd``) are skipped.
    Boxes are clipped to the image (``[0, W] x [0, H]``, COCO's continuous pixel frame);
    boxes left with no area are dropped with a :class:`DataWarning` (once per image).

    Args:
        cat_id_to_label: ``{category_id: label}``; default the 80 official COCO ids in order.
    """

    def __init__(self, cat_id_to_label: Mapping[int, int] | None = None) -> None:
        if cat_id_to_label is None:
            cat_id_to_label = {c: i for i, c in enumerate(COCO_CATEGORY_IDS)}
        self.cat_id_to_label = {int(k): int(v) for k, v in cat_id_to_label.items()}

    def __call__(self, target: Sequence[Mapping[str, Any]], width: float, height: float, *,
                 image_size: tuple[float, float] | None = None,
                 source: str | None = None) -> list[list[float]]:
        source = source or "<coco image>"
        rows, counts, first_other = self._parse(target, width, height, image_size, source)
        if first_other is not None:
            ann_id, cat = first_other
            raise BadSampleError(f"{source}: annotation {ann_id} has unknown category id {cat}",
                                 path=source)
        warn_dropped(source, counts.no_area)
        return rows

    def count(self, target: Sequence[Mapping[str, Any]], width: float, height: float, *,
              image_size: tuple[float, float] | None = None,
              source: str | None = None) -> tuple[list[list[float]], ImageCounts]:
        """Like calling the transform, but unknown category ids are counted (in
        ``counts.other``, as strings) instead of raising, and nothing is warned."""
        rows, counts, _ = self._parse(target, width, height, image_size,
                                      source or "<coco image>")
        return rows, counts

    def _parse(self, target: Sequence[Mapping[str, Any]], width: float, height: float,
               image_size: tuple[float, float] | None, source: str
               ) -> tuple[list[list[float]], ImageCounts, tuple[Any, int] | None]:
        clip_w, clip_h = image_size or (width, height)
        res: list[list[float]] = []
        counts = ImageCounts()
        first_other = None
        for ann in target:
            if ann.get("iscrowd", 0):
                counts.crowd += 1
                continue
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                cat = int(ann["category_id"])
            except (KeyError, TypeError, ValueError):
                raise BadSampleError(f"{source}: annotation {ann.get('id')} has no valid "
                                     f"bbox/category_id ({ann.get('bbox')!r})",
                                     path=source) from None
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise BadSampleError(f"{source}: annotation {ann.get('id')} has a non-finite "
                                     f"bbox {ann['bbox']!r}", path=source)
            if cat not in self.cat_id_to_label:
                counts.other.append(str(cat))
                first_other = first_other or (ann.get("id"), cat)
                continue
            box = clip_box(x, y, x + w, y + h, clip_w, clip_h)
            if box is None:
                counts.no_area += 1
                continue
            x1, y1, x2, y2 = box
            res.append([x1 / width, y1 / height, x2 / width, y2 / height,
                        self.cat_id_to_label[cat]])
        counts.kept = len(res)
        return res, counts, first_other


def _find_image_dir(root: str, image_set: str) -> str:
    candidates = [os.path.join(root, "images", image_set), os.path.join(root, image_set)]
    for c in candidates:
        if os.path.isdir(c):
            return c
    raise FileNotFoundError(f"COCO images for {image_set!r} not found: neither "
                            f"{candidates[0]} nor {candidates[1]} is a folder")


class COCODetection(DetectionDataset):
    """COCO detection dataset (ssd.pytorch's interface) on pycocotools.

    Reads ``<root>/annotations/instances_<image_set>.json`` and images from
    ``<root>/images/<image_set>/`` or ``<root>/<image_set>/`` (whichever exists). Labels are the
    annotation file's categories sorted by id, numbered 0..K-1: :attr:`cat_ids` (label ->
    category id, also :attr:`label_to_cat_id`), :attr:`cat_id_to_label`, :attr:`classes` (their
    names) and ``num_classes = K + 1``. ``ids`` are the image ids in file order; images without
    annotations are kept (empty targets). Nothing is read at import; the JSON is read here.

    Args:
        root: the COCO folder.
        image_set: e.g. ``'train2017'``, ``'val2017'``.
        transform, target_transform, dataset_name: as in ssd.pytorch (``target_transform``
            default: a :class:`COCOAnnotationTransform` for this file's categories; ``None``
            returns the raw annotation dicts).
        skip_bad: skip bad samples in ``dataset[i]`` instead of raising.
        ann_file, image_dir: override the default paths.
        check_size: check decoded image sizes against the JSON ``width``/``height``.
    """

    def __init__(self, root: Union[str, os.PathLike[str]], image_set: str = "train2017",
                 transform: Transform | None = None, target_transform: Any = DEFAULT,
                 dataset_name: str = "MS COCO", *, skip_bad: bool = False,
                 ann_file: str | None = None, image_dir: str | None = None,
                 check_size: bool = True) -> None:
        super().__init__()
        from pycocotools.coco import COCO  # heavy-ish import, only when a dataset is built

        self.root = os.fspath(root)
        self.image_set = image_set
        self.transform = transform
        self.name = dataset_name
        self.skip_bad = skip_bad
        self.check_size = check_size
        self.ann_file = ann_file or os.path.join(self.root, "annotations",
                                                 f"instances_{image_set}.json")
        data = _load_json(self.ann_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self.image_dir = image_dir or _find_image_dir(self.root, image_set)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids = [int(c["id"]) for c in cats]
        self.classes = tuple(str(c["name"]) for c in cats)
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.label_to_cat_id = dict(enumerate(self.cat_ids))
        self.num_classes = len(self.cat_ids) + 1
        if isinstance(target_transform, _Default):
            target_transform = COCOAnnotationTransform(self.cat_id_to_label)
        self.target_transform = target_transform
        self.ids = list(self.coco.getImgIds())

    def __len__(self) -> int:
        return len(self.ids)

    def image_id(self, index: int) -> int:
        return self.ids[index]

    def image_info(self, index: int) -> dict[str, Any]:
        return self.coco.imgs[self.ids[index]]

    def image_path(self, index: int) -> str:
        return os.path.join(self.image_dir, self.image_info(index)["file_name"])

    def image_size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` recorded in the annotation file."""
        info = self.image_info(index)
        return int(info["width"]), int(info["height"])

    def _load(self, index: int) -> tuple[np.ndarray, Any]:
        img_id = self.ids[index]
        size = self.image_size(index) if self.check_size else None
        img = read_image(self.image_path(index), img_id, expected_size=size)
        anns = self.coco.imgToAnns.get(img_id, [])
        tt = self.target_transform
        if tt is None:
            return img, anns
        height, width = img.shape[:2]
        if isinstance(tt, COCOAnnotationTransform):
            src = describe(self.image_path(index), img_id)
            return img, tt(anns, width, height, source=src)
        return img, tt(anns, width, height)

    def pull_image(self, index: int) -> np.ndarray:
        """The image as stored, ``[H, W, 3]`` uint8 BGR."""
        return read_image(self.image_path(index), self.ids[index])

    def _image_counts(self, index: int) -> ImageCounts | None:
        """Count one image's objects from the annotation file (``None``: custom transform)."""
        tt = self.target_transform
        if not isinstance(tt, COCOAnnotationTransform):
            return None
        img_id = self.ids[index]
        try:
            _, counts = tt.count(self.coco.imgToAnns.get(img_id, []), 1, 1,
                                 image_size=self.image_size(index),
                                 source=describe(self.image_path(index), img_id))
        except (BadSampleError, KeyError, TypeError, ValueError):
            return ImageCounts(problem="bad annotations")
        if counts.other:
            counts.problem = "annotations of unknown category ids"
        return counts

    def summary(self) -> DatasetSummary:
        """Images and objects kept and dropped (from the annotation file, no image read)."""
        source = (f"annotations {self.ann_file}, images {self.image_dir}, "
                  f"{len(self.classes)} classes")
        return summarize(self.name, source, (self._image_counts(i) for i in range(len(self))))

    def pull_anno(self, index: int) -> list[dict[str, Any]]:
        """The image's raw COCO annotation dicts (as ssd.pytorch returned them)."""
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=self.ids[index]))

    def __repr__(self) -> str:
        return (f"COCODetection(root={self.root!r}, image_set={self.image_set!r}, "
                f"{len(self)} images, {len(self.classes)} classes)")


def _load_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"COCO annotation file {path} does not exist (download COCO with "
            "data/scripts/COCO2017.sh, or pass root/ann_file)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotation file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "categories")):
        raise ValueError(f"COCO annotation file {path} lacks 'images'/'categories': not a "
                         "COCO instances file")
    data.setdefault("annotations", [])
    return data
