"""SSD's test-time head: decode the offsets, then per-class top-k and greedy NMS.

The output matches ssd.pytorch's ``Detect`` (section 5 of REFERENCE.md), computed for the whole
batch at once instead of per image and per class. Keyword options select the rules of other
SSD implementations (torchvision's ``ssd300_vgg16``); a config's ``detect`` entry names them
(see :data:`DETECT_OPTIONS`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torchvision.ops import batched_nms

from .box_utils import decode

__all__ = ["DETECT_OPTIONS", "Detect", "detect", "detect_options"]

_VOC_VARIANCE = (0.1, 0.2)

# The post-processing options a config's ``detect`` entry may set, with ssd.pytorch's values.
DETECT_OPTIONS: dict[str, Any] = {
    "candidates_per_class": None,  # top-scoring candidates per class before NMS (None: top_k)
    "max_per_image": None,  # best rows kept per image over all classes (None: no cap)
    "clip_boxes": False,  # clip decoded boxes to the image before NMS
    "keep_empty_boxes": False,  # zero-area boxes: never suppressed (True) or one per class
    "max_log_wh": None,  # cap on the width/height exponent of the decode (None: no cap)
}


def detect_options(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """A config's ``detect`` entry with every option of :data:`DETECT_OPTIONS` filled in.

    Raises ``ValueError`` naming an unknown option or a bad value.
    """
    given = dict((cfg or {}).get("detect") or {})
    unknown = sorted(set(given) - set(DETECT_OPTIONS))
    if unknown:
        raise ValueError(f"config {(cfg or {}).get('name', '?')!r}: unknown detect option(s) "
                         f"{unknown}; known: {sorted(DETECT_OPTIONS)}")
    out = {**DETECT_OPTIONS, **given}
    for key in ("candidates_per_class", "max_per_image"):
        value = out[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0 or (key == "candidates_per_class" and value == 0)):
            raise ValueError(f"detect option {key} must be a positive integer or None, "
                             f"got {value!r}")
    for key in ("clip_boxes", "keep_empty_boxes"):
        if not isinstance(out[key], bool):
            raise ValueError(f"detect option {key} must be true or false, got {out[key]!r}")
    if out["max_log_wh"] is not None and not isinstance(out["max_log_wh"], (int, float)):
        raise ValueError(f"detect option max_log_wh must be a number or None, "
                         f"got {out['max_log_wh']!r}")
    return out


def detect(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor, num_classes: int,
           bkg_label: int = 0, top_k: int = 200, conf_thresh: float = 0.01,
           nms_thresh: float = 0.45, variances: Sequence[float] = _VOC_VARIANCE,
           max_per_image: int | None = None, *, candidates_per_class: int | None = None,
           clip_boxes: bool = False, keep_empty_boxes: bool = False,
           max_log_wh: float | None = None) -> torch.Tensor:
    """Turn SSD outputs into per-class detections.

    For every image and every class except ``bkg_label``: the priors scoring above
    ``conf_thresh`` are candidates, the ``top_k`` best are kept, and greedy NMS removes any box
    whose IoU with a higher-scoring kept box exceeds ``nms_thresh``. The defaults are
    ssd.pytorch's; torchvision's ``ssd300_vgg16`` is ``candidates_per_class=400,
    max_per_image=200, clip_boxes=True, keep_empty_boxes=True, max_log_wh=log(1000 / 16)``.

    Args:
        loc: ``[B, P, 4]`` predicted offsets.
        conf: ``[B, P, C]`` class probabilities (already softmaxed).
        priors: ``[P, 4]`` centre-form priors (extra rows are ignored).
        num_classes: ``C``.
        bkg_label: the background class, whose output rows stay zero.
        top_k: rows per class in the output, and candidates per class before NMS unless
            ``candidates_per_class`` says otherwise.
        conf_thresh: minimum score (exclusive) of a candidate.
        nms_thresh: IoU above which a lower-scoring box is suppressed.
        variances: ``(v0, v1)`` of the box encoding.
        max_per_image: if given, keep only that many highest-scoring rows per image over all
            classes (zeroing the rest); ``None`` keeps everything, like ssd.pytorch.
        candidates_per_class: how many of a class's best candidates go into NMS (``None``:
            ``top_k``). A class keeps at most ``top_k`` rows after NMS (and the cap).
        clip_boxes: clip the decoded boxes to the image, ``[0, 1]``, before NMS.
        keep_empty_boxes: what happens to zero-area boxes. ssd.pytorch computes the IoU of two
            of them as 0 / 0 = NaN and keeps only IoU <= thresh, so a class keeps its best
            empty box and drops the others (``False``); torchvision suppresses only IoU >
            thresh, so they are all kept (``True``). An empty box never suppresses a box with
            area, nor the reverse (their IoU is 0). Empty boxes are common with
            ``clip_boxes``: a box wholly outside the image becomes one.
        max_log_wh: cap on ``loc_wh * variances[1]`` before ``exp`` in the decode.

    Returns:
        ``[B, C, top_k, 5]`` rows ``(score, x1, y1, x2, y2)`` sorted by descending score within
        each class and zero-padded; boxes are decoded, and clipped only with ``clip_boxes``.
        The dtype is float32 (or float64 for float64 inputs), on the inputs' device.
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
    if candidates_per_class is not None and candidates_per_class <= 0:
        raise ValueError(f"candidates_per_class must be positive, got {candidates_per_class}")
    dtype = torch.promote_types(torch.promote_types(loc.dtype, conf.dtype), torch.float32)
    device = loc.device
    out = torch.zeros(batch, num_classes, top_k, 5, dtype=dtype, device=device)
    n_cls = num_classes - 1 if 0 <= bkg_label < num_classes else num_classes
    if batch == 0 or n_priors == 0 or n_cls == 0:
        return out

    boxes = decode(loc.to(dtype), priors[:n_priors].to(device=device, dtype=dtype), variances,
                   max_log_wh)
    if clip_boxes:
        boxes = boxes.clamp(min=0.0, max=1.0)
    cls_idx = torch.arange(n_cls, device=device)  # the classes other than bkg_label
    if n_cls < num_classes:
        cls_idx += cls_idx >= bkg_label
    scores = conf.to(dtype).transpose(1, 2).index_select(1, cls_idx)  # [B, C', P]
    k = min(candidates_per_class or top_k, n_priors)
    rows_out = min(top_k, k)
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
    if not keep_empty_boxes:
        keep_mask = _one_empty_box_per_class(keep_mask, top_boxes)

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
    blank = (position[:rows_out] <= count).logical_not()[..., None]
    out[:, cls_idx, :rows_out] = packed[:, :, :rows_out].masked_fill_(blank, 0.0)
    return out


def _one_empty_box_per_class(keep_mask: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """ssd.pytorch's NMS on zero-area boxes: a group keeps only its first (best) one.

    ``keep_mask`` ``[B, C', k]`` (rows sorted by score within a group), ``boxes`` ``[B, C', k,
    4]``. The area is computed as ssd.pytorch does, so an underflowing product counts as empty.
    """
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    empty = keep_mask & (area == 0)
    return keep_mask & ~(empty & (empty.cumsum(dim=2) > 1))


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
