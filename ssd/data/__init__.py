"""Datasets, transforms and loaders: VOC, COCO, custom VOC-format data, SSD augmentation."""

from .augmentations import (
    CROP_MODES,
    Expand,
    PhotometricDistort,
    RandomSampleCrop,
    SSDAugmentation,
)
from .base import DetectionDataset
from .classes import (
    COCO_CATEGORY_IDS,
    COCO_CLASSES,
    VOC_CLASSES,
    load_class_names,
    resolve_classes,
)
from .coco import COCO_ROOT, COCOAnnotationTransform, COCODetection
from .errors import BadSampleError, DataWarning, MissingFileError, UnknownClassError
from .image_io import load_bgr_image, read_image
from .loader import (
    build_train_loader,
    detection_collate,
    reseed_transforms,
    seed_worker,
    set_epoch,
)
from .transforms import BaseTransform, base_transform
from .voc import VOC_ROOT, VOCAnnotationTransform, VOCDetection

__all__ = [
    "BadSampleError", "BaseTransform", "COCOAnnotationTransform", "COCODetection",
    "COCO_CATEGORY_IDS", "COCO_CLASSES", "COCO_ROOT", "CROP_MODES", "DataWarning",
    "DetectionDataset", "Expand", "MissingFileError", "PhotometricDistort", "RandomSampleCrop",
    "SSDAugmentation", "UnknownClassError", "VOCAnnotationTransform", "VOCDetection",
    "VOC_CLASSES", "VOC_ROOT", "base_transform", "build_train_loader", "detection_collate",
    "load_bgr_image", "load_class_names", "read_image", "reseed_transforms", "resolve_classes",
    "seed_worker", "set_epoch",
]
