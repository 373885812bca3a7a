"""ssd.pytorch's ``layers.box_utils``: the box maths of :mod:`ssd.box_utils`, plus its ``nms``
and ``log_sum_exp`` helpers with their old signatures."""

from __future__ import annotations

import torch
from torchvision.ops import nms as _tv_nms

from ssd.box_utils import center_size, decode, encode, intersect, jaccard, match, point_form

__all__ = ["center_size", "decode", "encode", "intersect", "jaccard", "log_sum_exp", "match",
           "nms", "point_form"]


def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5,
        top_k: int = 200) -> tuple[torch.Tensor, int]:
    """Greedy NMS with ssd.pytorch's contract.

    Args:
        boxes: ``[N, 4]`` corner-form boxes (IoU without a +1 pixel term).
        scores: ``[N]``.
        overlap: a box is suppressed when its IoU with a kept, higher-scoring box exceeds this.
        top_k: only the ``top_k`` highest scores are considered (all when ``top_k <= 0``).

    Returns:
        ``(keep, count)``: ``keep`` is a ``[N]`` int64 tensor whose first ``count`` entries
        are the kept indices into ``boxes``, by descending score; the rest are zero.
    """
    keep = torch.zeros(scores.numel(), dtype=torch.long, device=scores.device)
    if boxes.numel() == 0 or scores.numel() == 0:
        return keep, 0
    order = scores.argsort(descending=True, stable=True)
    if top_k and top_k > 0:
        order = order[:top_k]
    # torchvision sorts again, so the selected boxes are passed in score order and mapped back.
    kept = order[_tv_nms(boxes[order].float(), scores[order].float(), float(overlap))]
    keep[:kept.numel()] = kept
    return keep, int(kept.numel())


def log_sum_exp(x: torch.Tensor) -> torch.Tensor:
    """``log(sum(exp(x), dim=1, keepdim=True))`` for ``[N, C]`` scores, computed stably."""
    return torch.logsumexp(x, dim=1, keepdim=True)
