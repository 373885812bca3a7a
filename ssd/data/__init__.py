"""Datasets, transforms and loaders: VOC, COCO, custom VOC-format data, SSD augmentation.

Names load on first use, so the torch-free parts (``image_io``, ``classes``, ``transforms``)
can be used without importing PyTorch.
"""

from __future__ import annotations

import importlib

# name -> the submodule that defines it
_EXPORTS = {
    "CROP_MODES": "augmentations", "Expand": "augmentations",
    "PhotometricDistort": "augmentations", "RandomSampleCrop": "augmentations",
    "SSDAugmentation": "augmentations",
    "DetectionDataset": "base",
    "COCO_CATEGORY_IDS": "classes", "COCO_CLASSES": "classes", "VOC_CLASSES": "classes",
    "load_class_names": "classes", "resolve_classes": "classes",
    "COCO_ROOT": "coco", "COCOAnnotationTransform": "coco", "COCODetection": "coco",
    "BadSampleError": "errors", "DataWarning": "errors", "MissingFileError": "errors",
    "UnknownClassError": "errors",
    "load_bgr_image": "image_io", "read_image": "image_io",
    "build_train_loader": "loader", "detection_collate": "loader",
    "reseed_transforms": "loader", "seed_worker": "loader", "set_epoch": "loader",
    "BaseTransform": "transforms", "base_transform": "transforms",
    "VOC_ROOT": "voc", "VOCAnnotationTransform": "voc", "VOCDetection": "voc",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
