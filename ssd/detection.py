"""SSD's test-time head: decode the offsets, then per-class top-k and greedy NMS.

The output matches ssd.pytorch's ``Detect`` (section 5 of REFERENCE.md), computed for the whole
batch at once instead of per image and per class.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torchvision.ops import batched_nms

from .box_utils import decode

__all__ = ["Detect", "detect"]

_VOC_VARIANCE = (0.1, 0.2)


def detect(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, num_classes: int,
           bkg_label: int = 0, top_k: int = 200, conf_thresh: float = 0.01,
           nms_thresh: float = 0.45, variances: Sequence[float] = _VOC_VARIANCE,
           max_per_image: int | None = None) -> torch.Tensor:
    """Turn SSD outputs into per-class detections.

    For every image and every class except ``bkg_label``: the priors scoring above
    ``conf_thresh`` are candidates, the ``top_k`` best are kept, and greedy NMS removes any box
    whose IoU with a higher-scoring kept box exceeds ``nms_thresh``.

    Args:
        loc: ``[B, P, 4]`` predicted offsets.
        conf: ``[B, P, C]`` class probabilities (already softmaxed).
        priors: ``[P, 4]`` centre-form priors (extra rows are ignored).
        num_classes: ``C``.
        bkg_label: the background class, whose output rows stay zero.
        top_k: candidates per class before NMS, and rows per class in the output.
        conf_thresh: minimum score (exclusive) of a candidate.
        nms_thresh: IoU above which a lower-scoring box is suppressed.
        variances: ``(v0, v1)`` of the box encoding.
        max_per_image: if given, keep only that many highest-scoring rows per image over all
            classes (zeroing the rest); ``None`` keeps everything, like ssd.pytorch.

    Returns:
        ``[B, C, top_k, 5]`` rows ``(score, x1, y1, x2, y2)`` sorted by descending score within
        each class and zero-padded; boxes are decoded but not clipped. The dtype is float32 (or
        float64 for float64 inputs), on the inputs' device.
    """
    if loc.dim() != 3 or loc.size(-1) != 4:
        raise ValueError(f"loc must be [B, P, 4], got {tuple(loc.shape)}")
    batch, n_priors = loc.shape[:2]
    if conf.shape != (batch, n_priors, num_classes):
        raise ValueError(
            f"conf must be [B, P, num_classes] = {(batch, n_priors, num_classes)}, "
            f"got {tuple(conf.shape)}")
    if priors.dim() != 2 or priors.size(-1) != 4 or priors.size(0) < n_priors:
        raise ValueError(f"priors must be [>= {n_priors}, 4], got {tuple(priors.shape)}")
    if top_k <= 0:
        raise ValueError(f"top_k must be positive, got {top_k}")
    dtype = torch.promote_types(torch.promote_types(loc.dtype, conf.dtype), torch.float32)
    device = loc.device
    out = torch.zeros(batch, num_classes, top_k, 5, dtype=dtype, device=device)
    n_cls = num_classes - 1 if 0 <= bkg_label < num_classes else num_classes
    if batch == 0 or n_priors == 0 or n_cls == 0:
        return out

    boxes = decode(loc.to(dtype), priors[:n_priors].to(device=device, dtype=dtype), variances)
    cls_idx = torch.arange(n_cls, device=device)  # the classes other than bkg_label
    if n_cls < num_classes:
        cls_idx += cls_idx >= bkg_label
    scores = conf.to(dtype).transpose(1, 2).index_select(1, cls_idx)  # [B, C', P]
    k = min(top_k, n_priors)
    scores = scores.masked_fill(~(scores > conf_thresh), float("-inf"))
    top_scores, top_idx = scores.topk(k, dim=2)  # [B, C', k], descending
    top_boxes = boxes.gather(1, top_idx.reshape(batch, n_cls * k, 1).expand(-1, -1, 4))
    top_boxes = top_boxes.reshape(batch, n_cls, k, 4)

    # One NMS call for every (image, class) group. torchvision may separate the groups by
    # adding a per-group offset to the coordinates: in float64 (where the device has it) the
    # shifted float32 corners stay exact, so the IoUs are those of the unshifted boxes; moving
    # the boxes to non-negative coordinates first keeps the groups apart (it assumes >= -1).
    cand = (top_scores > float("-inf")).reshape(-1).nonzero().squeeze(1)
    keep_mask = torch.zeros(batch * n_cls * k, dtype=torch.bool, device=device)
    if cand.numel():
        nms_dtype = torch.float64 if device.type in ("cpu", "cuda") else dtype
        groups = torch.div(cand, k, rounding_mode="floor")
        cand_boxes = top_boxes.reshape(-1, 4)[cand].to(nms_dtype)
        cand_boxes = cand_boxes - cand_boxes.min()
        kept = batched_nms(cand_boxes, top_scores.reshape(-1)[cand].to(nms_dtype), groups,
                           nms_thresh)
        keep_mask[cand[kept]] = True
    keep_mask = keep_mask.reshape(batch, n_cls, k)

    if max_per_image is not None:
        keep_mask = _cap_per_image(keep_mask, top_scores, max_per_image)

    # Kept rows move up to their rank among the kept rows of their group, dropped rows to
    # scratch slots k.. that are cut off afterwards: every row has its own slot, so the
    # scatter is a permutation (deterministic on every device).
    kept_upto = keep_mask.cumsum(dim=2)
    position = torch.arange(1, k + 1, device=device)
    dest = torch.where(keep_mask, kept_upto - 1, k + position - kept_upto - 1)
    rows = torch.cat((top_scores[..., None], top_boxes), dim=3)
    packed = torch.empty(batch, n_cls, 2 * k, 5, dtype=dtype, device=device)
    packed.scatter_(2, dest[..., None].expand(-1, -1, -1, 5), rows)
    count = kept_upto[..., -1:]  # [B, C', 1]
    packed = packed[:, :, :k].masked_fill_((position <= count)[..., None].logical_not(), 0.0)
    out[:, cls_idx, :k] = packed
    return out


def _cap_per_image(keep_mask: torch.Tensor, scores: torch.Tensor, cap: int) -> torch.Tensor:
    """Keep only the ``cap`` highest-scoring kept rows of each image: ``[B, C', k]`` masks."""
    if cap < 0:
        raise ValueError(f"max_per_image must be >= 0, got {cap}")
    batch = keep_mask.size(0)
    flat_scores = scores.masked_fill(~keep_mask, float("-inf")).reshape(batch, -1)
    n = min(cap, flat_scores.size(1))
    capped = torch.zeros_like(flat_scores, dtype=torch.bool)
    if n:
        _, best = flat_scores.topk(n, dim=1)
        capped.scatter_(1, best, True)
    return keep_mask & capped.reshape(keep_mask.shape)


class Detect(torch.autograd.Function):
    """ssd.pytorch's test head as a static-method autograd Function (not differentiable).

    Call ``Detect.apply(num_classes, bkg_label, top_k, conf_thresh, nms_thresh, loc, conf,
    priors)``; it returns :func:`detect`'s ``[B, C, top_k, 5]`` tensor with VOC variances.
    """

    @staticmethod
    def forward(ctx: Any, num_classes: int, bkg_label: int, top_k: int, conf_thresh: float,
                nms_thresh: float, loc_data: torch.Tensor, conf_data: torch.Tensor,
                prior_data: torch.Tensor) -> torch.Tensor:
        out = detect(loc_data, conf_data, prior_data, num_classes, bkg_label=bkg_label,
                     top_k=top_k, conf_thresh=conf_thresh, nms_thresh=nms_thresh,
                     variances=_VOC_VARIANCE)
        ctx.mark_non_differentiable(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[None, ...]:
        return (None,) * 8
