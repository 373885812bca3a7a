"""Shared by the demo/TensorBoard tests: an SSD300 whose detections are set by hand.

All head weights are zero, so every head outputs its bias whatever the image: every source
but the last (the 1x1 map) says "background"; the last one's priors all regress to ``box``
with class ``label`` at ``score``. After NMS the model detects exactly that one box on any
image, a real checkpoint whose output the tests know in advance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from ssd.box_utils import encode
from ssd.config import get_config
from ssd.data.classes import VOC_CLASSES
from ssd.model import build_ssd
from ssd.priors import prior_boxes
from ssd.weights import save_weights_file


def controlled_ssd(box: Sequence[float] = (0.25, 0.3, 0.75, 0.8), label: int = 11,
                   score: float = 0.9) -> torch.nn.Module:
    """A test-phase VOC SSD300 detecting ``box`` (relative x1, y1, x2, y2), class ``label``
    (0-based, VOC: 11 = dog) at ``score`` on every image."""
    cfg = get_config("voc300")
    classes = int(cfg["num_classes"])
    torch.manual_seed(0)
    net = build_ssd("test", 300, classes)
    priors = prior_boxes(cfg, "cpu")
    n_last = int(cfg["mbox"][-1])
    class_logit = math.log(score * (classes - 1) / (1.0 - score))  # softmax gives `score`
    with torch.no_grad():
        for k, (loc, conf) in enumerate(zip(net.loc, net.conf)):
            for layer in (loc, conf):
                layer.weight.zero_()
                layer.bias.zero_()
            logits = conf.bias.view(-1, classes)
            if k < len(net.conf) - 1:
                logits[:, 0] = 10.0  # background everywhere
            else:
                logits[:, label + 1] = class_logit
                target = torch.tensor([list(box)] * n_last, dtype=torch.float32)
                loc.bias.copy_(encode(target, priors[-n_last:], cfg["variance"]).reshape(-1))
    return net


def save_controlled_ssd(path: Path, **kwargs) -> Path:
    """:func:`controlled_ssd` written with its config and VOC class names."""
    net = controlled_ssd(**kwargs)
    return save_weights_file(path, net.state_dict(), config=get_config("voc300"),
                             class_names=VOC_CLASSES)
