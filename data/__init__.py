"""ssd.pytorch's ``data`` package: ``from data import *`` keeps working.

Everything is re-exported from :mod:`ssd.data` and :mod:`ssd.config`. Importing reads no
file: the default roots come from the environment (``SSD_VOC_ROOT``, ``SSD_COCO_ROOT``) or
``~/data/...``, and COCO's annotation file is read only when a ``COCODetection`` is built.
This folder also holds the bundled sample data (``data/samples``) and dataset download
scripts (``data/scripts``).
"""

from ssd.data import (
    COCO_CLASSES,
    COCO_ROOT,
    VOC_CLASSES,
    VOC_ROOT,
    BaseTransform,
    COCOAnnotationTransform,
    COCODetection,
    SSDAugmentation,
    VOCAnnotationTransform,
    VOCDetection,
    base_transform,
    detection_collate,
)

from .config import COLORS, HOME, MEANS, coco, voc

__all__ = [
    "COCO_CLASSES", "COCO_ROOT", "COLORS", "HOME", "MEANS", "VOC_CLASSES", "VOC_ROOT",
    "BaseTransform", "COCOAnnotationTransform", "COCODetection", "SSDAugmentation",
    "VOCAnnotationTransform", "VOCDetection", "base_transform", "coco", "detection_collate",
    "voc",
]
