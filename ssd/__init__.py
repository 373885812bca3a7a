"""SSD: the Single Shot MultiBox Detector (Liu et al., 2016) in modern PyTorch.

``import ssd`` gives the model builder, its parts and the configurations; datasets live in
:mod:`ssd.data`, training in :mod:`ssd.training`, evaluation in :mod:`ssd.evaluation`. Nothing
here reads a file or touches a device at import time.
"""

from .config import CONFIGS, MEANS, coco, coco512, get_config, voc, voc512
from .detection import Detect, detect
from .l2norm import L2Norm
from .loss import MultiBoxLoss
from .model import SSD, add_extras, build_ssd, multibox, vgg
from .priors import PriorBox, prior_boxes

__version__ = "0.1.0"


def __getattr__(name: str):
    # The notebook API pulls in the evaluation stack; load it only when asked for.
    if name in ("Detector", "Detections"):
        from . import detector

        return getattr(detector, name)
    if name == "pretrained_model":
        from .weights.zoo import pretrained_model

        return pretrained_model
    # Eager import would make `python -m ssd.weights` warn about a module loaded twice.
    if name in ("load_base_weights", "load_ssd_weights", "load_state_dict_file",
                "read_weights_file", "save_weights_file"):
        from . import weights

        return getattr(weights, name)
    raise AttributeError(f"module 'ssd' has no attribute {name!r}")

__all__ = [
    "CONFIGS", "MEANS", "SSD", "Detect", "Detections", "Detector", "L2Norm", "MultiBoxLoss",
    "PriorBox", "add_extras", "build_ssd", "coco", "coco512", "detect", "get_config",
    "load_base_weights", "load_ssd_weights", "load_state_dict_file", "multibox",
    "pretrained_model", "prior_boxes",
    "vgg", "voc", "voc512",
]
