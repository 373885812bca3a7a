"""Box arithmetic and prior matching for SSD, as pure tensor functions.

Boxes are either corner form ``(x1, y1, x2, y2)`` or centre form ``(cx, cy, w, h)``, in the
last dimension. Every function works on any device and floating dtype and broadcasts over
leading batch dimensions where that is natural. The floating-point operations are done in the
same order as ssd.pytorch so that results agree with it to the last bit where possible.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "point_form", "center_size", "intersect", "jaccard", "encode", "decode", "match",
    "match_batch", "match_indexed",
]


def point_form(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` centre form ``(cx, cy, w, h)`` -> ``[..., 4]`` corners ``(x1, y1, x2, y2)``."""
    return torch.cat((boxes[..., :2] - boxes[..., 2:] / 2,
                      boxes[..., :2] + boxes[..., 2:] / 2), dim=-1)


def center_size(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` corners ``(x1, y1, x2, y2)`` -> ``[..., 4]`` centre form ``(cx, cy, w, h)``."""
    return torch.cat(((boxes[..., 2:] + boxes[..., :2]) / 2,
                      boxes[..., 2:] - boxes[..., :2]), dim=-1)


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _pair_columns(box_a: torch.Tensor, box_b: torch.Tensor) -> tuple[list, list]:
    """Corner columns shaped to broadcast ``[..., A, 1]`` against ``[..., 1, B]``.

    ``box_b``'s columns are made contiguous: broadcasting over a stride-4 last dimension
    would defeat vectorisation, and they are small next to the ``[A, B]`` results.
    """
    cols_a = [box_a[..., :, None, i] for i in range(4)]
    cols_b = [box_b[..., None, :, i].contiguous() for i in range(4)]
    return cols_a, cols_b


def _intersect(cols_a: list, cols_b: list, inplace: bool) -> torch.Tensor:
    ax1, ay1, ax2, ay2 = cols_a
    bx1, by1, bx2, by2 = cols_b
    # In-place steps only overwrite fresh tensors whose old values autograd does not keep.
    w = torch.minimum(ax2, bx2).sub_(torch.maximum(ax1, bx1)).relu_()
    h = torch.minimum(ay2, by2).sub_(torch.maximum(ay1, by1)).relu_()
    return w.mul_(h) if inplace else w * h


def intersect(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    """Intersection areas of corner-form boxes.

    Args:
        box_a: ``[..., A, 4]``.
        box_b: ``[..., B, 4]`` (leading dimensions broadcast against ``box_a``'s).

    Returns:
        ``[..., A, B]``; disjoint boxes give 0.
    """
    cols_a, cols_b = _pair_columns(box_a, box_b)
    return _intersect(cols_a, cols_b, inplace=not _needs_grad(box_a, box_b))


def jaccard(box_a: torch.Tensor, box_b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of corner-form boxes (no ``+1`` pixel term).

    Args:
        box_a: ``[..., A, 4]``, e.g. ``[A, 4]`` or a padded batch ``[B, G, 4]``.
        box_b: ``[..., B, 4]``, e.g. the priors in corner form ``[P, 4]``.

    Returns:
        ``[..., A, B]`` IoU, e.g. ``[A, B]`` or ``[B, G, P]``.
    """
    inplace = not _needs_grad(box_a, box_b)
    cols_a, cols_b = _pair_columns(box_a, box_b)
    inter = _intersect(cols_a, cols_b, inplace)
    ax1, ay1, ax2, ay2 = cols_a
    bx1, by1, bx2, by2 = cols_b
    area_a = (ax2 - ax1) * (ay2 - ay1)  # [..., A, 1]
    area_b = (bx2 - bx1) * (by2 - by1)  # [..., 1, B]
    union = (area_a + area_b).sub_(inter)
    return inter.div_(union) if inplace else inter / union


def encode(matched: torch.Tensor, priors: torch.Tensor,
           variances: Sequence[float]) -> torch.Tensor:
    """Regression targets of corner-form boxes relative to centre-form priors.

    Args:
        matched: ``[..., P, 4]`` corner-form boxes, one per prior.
        priors: ``[P, 4]`` ``(cx, cy, w, h)``.
        variances: ``(v0, v1)``, the centre and size variances (0.1, 0.2 in SSD).

    Returns:
        ``[..., P, 4]`` ``((gcx - pcx) / (v0 pw), (gcy - pcy) / (v0 ph), log(gw / pw) / v1,
        log(gh / ph) / v1)``.
    """
    return _encode_center_size(center_size(matched), priors, variances)


def _encode_center_size(matched: torch.Tensor, priors: torch.Tensor,
                        variances: Sequence[float]) -> torch.Tensor:
    """:func:`encode` of boxes already in centre form (the same float operations, in order)."""
    g_cxcy = (matched[..., :2] - priors[..., :2]) / (variances[0] * priors[..., 2:])
    g_wh = torch.log(matched[..., 2:] / priors[..., 2:]) / variances[1]
    return torch.cat((g_cxcy, g_wh), dim=-1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float],
           max_log_wh: float | None = None) -> torch.Tensor:
    """Invert :func:`encode`: ``[..., P, 4]`` offsets, ``[P, 4]`` priors -> ``[..., P, 4]`` corners.

    ``cx = pcx + lx v0 pw``, ``w = pw exp(lw v1)``, ``x1 = cx - w / 2``, ``x2 = x1 + w`` (that
    order, as in ssd.pytorch). Boxes are not clipped. ``max_log_wh`` caps ``lw v1`` and
    ``lh v1`` before ``exp`` (torchvision caps them at ``log(1000 / 16)``); ``None`` does not.
    """
    cxcy = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    log_wh = loc[..., 2:] * variances[1]
    if max_log_wh is not None:
        log_wh = log_wh.clamp(max=max_log_wh)
    wh = priors[..., 2:] * torch.exp(log_wh)
    xy1 = cxcy - wh / 2
    return torch.cat((xy1, wh + xy1), dim=-1)


def match_batch(threshold: float, truths: torch.Tensor, labels: torch.Tensor,
                valid: torch.Tensor | None, priors: torch.Tensor,
                variances: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Match every prior of every image of a padded batch to a ground-truth box.

    Rules (ssd.pytorch's): each prior takes the GT with the highest IoU (the first one on ties);
    then each GT claims its own best prior (the first one on ties), whose overlap becomes 2;
    when several GTs claim the same prior the later GT wins. The class target is ``label + 1``,
    or 0 (background) where the prior's overlap is below ``threshold``.

    Args:
        threshold: IoU below which a prior is background (0.5 in SSD).
        truths: ``[B, G, 4]`` corner-form GT boxes, padded along ``G``.
        labels: ``[B, G]`` 0-based class labels (any numeric dtype).
        valid: ``[B, G]`` bool mask of real (non-padding) GTs, or ``[B]`` GT counts (the first
            ``count`` rows of each image are real), or ``None`` when all rows are real.
        priors: ``[P, 4]`` centre-form priors.
        variances: ``(v0, v1)`` for :func:`encode`.

    Returns:
        ``(loc_t [B, P, 4], conf_t [B, P] int64)``. Images without GTs are all background, with
        finite (meaningless) ``loc_t``.

    A mask or counts on a CUDA device cost one synchronisation (to list the real rows); use
    :func:`match_indexed` with indices built on the host to avoid it.
    """
    if truths.dim() != 3 or truths.size(-1) != 4:
        raise ValueError(f"truths must be [B, G, 4], got {tuple(truths.shape)}")
    batch, n_gt = truths.shape[:2]
    device = truths.device
    if valid is None:
        real_index = torch.arange(batch * n_gt, device=device)
    else:
        if valid.dim() == 1 and valid.dtype != torch.bool:
            valid = torch.arange(n_gt, device=device)[None, :] < valid.to(device)[:, None]
        if valid.shape != (batch, n_gt):
            raise ValueError(
                f"valid must be a [B, G] = {(batch, n_gt)} mask or [B] counts, "
                f"got {tuple(valid.shape)}")
        real_index = valid.to(device=device, dtype=torch.bool).reshape(-1).nonzero().squeeze(1)
    return match_indexed(threshold, truths, labels, real_index, priors, variances)


def match_indexed(threshold: float, truths: torch.Tensor, labels: torch.Tensor,
                  real_index: torch.Tensor, priors: torch.Tensor,
                  variances: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`match_batch` with the real GT rows given as flat indices (no device sync).

    Args:
        threshold, priors, variances: as for :func:`match_batch`.
        truths: ``[B, G, 4]`` padded corner-form GT boxes; padding rows may hold anything.
        labels: ``[B, G]`` 0-based labels.
        real_index: ``[N]`` int64, the distinct flat indices ``b * G + g`` of the real GT rows,
            in any order.

    Returns:
        ``(loc_t [B, P, 4], conf_t [B, P] int64)``.
    """
    if truths.dim() != 3 or truths.size(-1) != 4:
        raise ValueError(f"truths must be [B, G, 4], got {tuple(truths.shape)}")
    batch, n_gt = truths.shape[:2]
    if labels.shape != (batch, n_gt):
        raise ValueError(f"labels must be [B, G] = {(batch, n_gt)}, got {tuple(labels.shape)}")
    if priors.dim() != 2 or priors.size(-1) != 4:
        raise ValueError(f"priors must be [P, 4], got {tuple(priors.shape)}")
    device = truths.device
    n_priors = priors.size(0)
    real_index = real_index.to(device=device, dtype=torch.long)
    if n_gt == 0:
        # No GT anywhere: one padding row per image keeps the maths below uniform.
        truths = truths.new_zeros(batch, 1, 4)
        labels = labels.new_zeros(batch, 1)
        n_gt = 1

    # IoU only for the real GTs ([N, P]: padding costs nothing here) ...
    flat_truths = truths.reshape(-1, 4).index_select(0, real_index)
    overlaps = jaccard(flat_truths, point_form(priors))  # [N, P]
    best_prior_idx = overlaps.argmax(dim=1)  # [N], first prior on ties
    # ... then laid out per image, padding rows at -1 so they can never be a prior's best GT.
    padded = overlaps.new_full((batch * n_gt, n_priors), -1.0)
    padded.index_copy_(0, real_index, overlaps)
    best_truth_overlap, best_truth_idx = padded.view(batch, n_gt, n_priors).max(dim=1)  # [B, P]

    # Forced matches: the highest GT slot claiming a prior wins ("later GT wins"). amax does not
    # depend on the order of the writes, so this is deterministic on every device.
    img = torch.div(real_index, n_gt, rounding_mode="floor")
    slot = real_index - img * n_gt
    forced = torch.full((batch * n_priors,), -1, dtype=torch.long, device=device)
    forced.scatter_reduce_(0, img * n_priors + best_prior_idx, slot, reduce="amax")
    forced = forced.view(batch, n_priors)
    is_forced = forced >= 0
    best_truth_idx = torch.where(is_forced, forced, best_truth_idx)
    best_truth_overlap = best_truth_overlap.masked_fill_(is_forced, 2.0)

    is_real = torch.zeros(batch * n_gt, dtype=torch.bool, device=device)
    is_real[real_index] = True
    is_real = is_real.view(batch, n_gt)
    # Padding rows become a unit box so that the (unused) targets of empty images stay finite.
    unit = (torch.arange(4, device=device) >= 2).to(truths.dtype)  # (0, 0, 1, 1), no copy
    # Centre form per GT (a few boxes) rather than per prior: encode's first steps, done once.
    safe_truths = center_size(torch.where(is_real[..., None], truths, unit))
    flat_idx = best_truth_idx + torch.arange(batch, device=device)[:, None] * n_gt
    matches = safe_truths.reshape(-1, 4).index_select(0, flat_idx.reshape(-1))
    matches = matches.view(batch, n_priors, 4)
    conf = labels.gather(1, best_truth_idx).long() + 1
    background = (best_truth_overlap < threshold) | ~is_real.gather(1, best_truth_idx)
    conf = conf.masked_fill_(background, 0)
    loc = _encode_center_size(matches, priors, variances)
    return loc, conf


def match(threshold: float, truths: torch.Tensor, priors: torch.Tensor,
          variances: Sequence[float], labels: torch.Tensor, loc_t: torch.Tensor,
          conf_t: torch.Tensor, idx: int) -> None:
    """ssd.pytorch's one-image matching, kept for old scripts: fills ``loc_t[idx]``/``conf_t[idx]``.

    Args:
        threshold: background IoU threshold.
        truths: ``[G, 4]`` corner-form GT boxes.
        priors: ``[P, 4]`` centre-form priors.
        variances: ``(v0, v1)``.
        labels: ``[G]`` 0-based labels.
        loc_t: ``[B, P, 4]`` output, written in place at ``idx``.
        conf_t: ``[B, P]`` output, written in place at ``idx``.
        idx: the image's index in the batch.
    """
    loc, conf = match_batch(threshold, truths[None], labels[None], None, priors, variances)
    loc_t[idx] = loc[0]
    conf_t[idx] = conf[0]
