"""Saying what a state dict holds."""

from __future__ import annotations

import re
from typing import Mapping

import torch

from .vgg16 import _CONV6, _CONV7, _VGG16_CONVS

__all__ = ["describe_state_dict"]

def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """A one-line guess of what kind of weights ``state`` holds."""
    keys = set(state)
    if {f"{i}.weight" for i in (*_VGG16_CONVS, _CONV6, _CONV7)} <= keys and len(keys) == 30:
        return "VGG16 reduced-fc base net (vgg16_reducedfc.pth layout)"
    if "features.0.weight" in keys and "classifier.0.weight" in keys:
        return "torchvision VGG16 (convert it with `convert-vgg16`)"
    if "vgg.0.weight" in keys and "conf.0.weight" in keys:
        heads = len([k for k in keys if re.fullmatch(r"loc\.\d+\.weight", k)])
        size = {6: 300, 7: 512}.get(heads, "?")
        loc0, conf0 = state.get("loc.0.weight"), state["conf.0.weight"]
        mbox0 = loc0.shape[0] // 4 if loc0 is not None else 0
        classes = conf0.shape[0] // mbox0 if mbox0 else "?"
        return f"whole SSD{size} ({classes} classes including background)"
    return "unknown layout"
