"""The exportable forms of an SSD: plain tensor functions of the image batch.

:class:`ScoresBoxes` is the deployed contract (softmax scores and decoded boxes, the priors
baked in as constants); :class:`RawOutputs` is the bare network (offsets and logits). Neither
has a data-dependent branch: every shape but the batch is fixed by the config.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..box_utils import decode

__all__ = ["RawOutputs", "ScoresBoxes", "raw_phase"]


@contextlib.contextmanager
def raw_phase(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in the train phase (raw ``loc, conf, priors`` outputs) and restore it."""
    saved = model.phase
    model.phase = "train"
    try:
        yield model
    finally:
        model.phase = saved


def _check_ssd(model: nn.Module) -> nn.Module:
    for attr in ("phase", "priors", "num_classes", "size", "cfg"):
        if not hasattr(model, attr):
            raise TypeError(f"expected an ssd.SSD model (missing .{attr}), got "
                            f"{type(model).__name__}")
    return model


class RawOutputs(nn.Module):
    """``images [N, 3, S, S]`` -> ``loc [N, P, 4]`` offsets, ``conf [N, P, C]`` logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.net = _check_ssd(model)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with raw_phase(self.net) as net:
            loc, conf, _ = net(images)
        return loc, conf


class ScoresBoxes(nn.Module):
    """``images [N, 3, S, S]`` -> ``scores [N, P, C]`` (softmax over classes, background at
    index 0) and ``boxes [N, P, 4]`` (decoded ``x1, y1, x2, y2`` relative to the image, not
    clipped): exactly what :func:`ssd.detection.detect` gets before thresholding and NMS.

    The priors are copied in as a buffer, so an exporter stores them as a constant.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.raw = RawOutputs(model)
        self.variances = tuple(float(v) for v in model.cfg["variance"])
        self.register_buffer("priors", model.priors.detach().float().clone(), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, conf = self.raw(images)
        scores = torch.softmax(conf.float(), dim=-1)
        boxes = decode(loc.float(), self.priors[:loc.shape[1]], self.variances)
        return scores, boxes
