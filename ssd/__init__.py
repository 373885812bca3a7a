"""SSD: the Single Shot MultiBox Detector (Liu et al., 2016) in modern PyTorch.

``import ssd`` gives the model builder, its parts and the configurations; datasets live in
:mod:`ssd.data`, training in :mod:`ssd.training`, evaluation in :mod:`ssd.evaluation`. Nothing
here reads a file or touches a device at import time.

Every name is loaded on first use: ``import ssd`` itself imports neither torch nor any other
module, so the ONNX Runtime predictor (:class:`ssd.OnnxDetector`) runs without PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the submodule that defines it
_EXPORTS = {
    "CONFIGS": "config", "MEANS": "config", "coco": "config", "coco512": "config",
    "get_config": "config", "voc": "config", "voc512": "config",
    "Detect": "detection", "detect": "detection",
    "L2Norm": "l2norm",
    "MultiBoxLoss": "loss",
    "SSD": "model", "add_extras": "model", "build_ssd": "model", "multibox": "model",
    "vgg": "model",
    "PriorBox": "priors", "prior_boxes": "priors",
    "Detections": "detections",
    "Detector": "detector",
    "OnnxDetector": "onnx_detector",
    "load_base_weights": "weights", "load_ssd_weights": "weights",
    "load_state_dict_file": "weights", "read_weights_file": "weights",
    "save_weights_file": "weights", "pretrained_model": "weights.zoo",
}

# Submodules that `import ssd` used to import eagerly: `ssd.detection.detect` etc. keep working.
_SUBMODULES = ("box_utils", "config", "data", "detection", "detections", "detector",
               "evaluation", "export", "io", "l2norm", "loss", "model", "onnx_detector",
               "priors", "training", "visualize", "weights")


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ssd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "CONFIGS", "MEANS", "SSD", "Detect", "Detections", "Detector", "L2Norm", "MultiBoxLoss",
    "OnnxDetector", "PriorBox", "add_extras", "build_ssd", "coco", "coco512", "detect",
    "get_config", "load_base_weights", "load_ssd_weights", "load_state_dict_file", "multibox",
    "pretrained_model", "prior_boxes", "vgg", "voc", "voc512",
]
