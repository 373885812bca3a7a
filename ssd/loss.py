"""SSD's training loss: smooth-L1 box regression + cross entropy with hard negative mining.

Same maths as ssd.pytorch's ``MultiBoxLoss`` (section 4 of REFERENCE.md), for the whole batch
at once: no Python loop over images, ground-truth boxes or classes.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .box_utils import match_indexed
from .config import voc

__all__ = ["MultiBoxLoss", "hard_negatives", "pad_targets"]


def pad_targets(targets: Sequence[torch.Tensor], device: torch.device | str | None = None,
                num_classes: int | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged per-image targets into one padded tensor, with one host-to-device copy.

    Args:
        targets: ``B`` tensors of shape ``[n_i, 5]`` ``(x1, y1, x2, y2, label)``; ``n_i`` may be 0
            (an empty 1-D tensor is also taken as "no objects"); a ``[B, G, 5]`` tensor is
            taken as ``B`` images with ``G`` real rows each.
        device: where the results go (default: where the targets are).
        num_classes: if given (and the targets are on the CPU, where checking is free), labels
            must lie in ``[0, num_classes - 2]`` (class 0 is the background).
        dtype: the floating dtype of the padded targets.

    Returns:
        ``(padded [B, G, 5], real_index [N])`` with ``G = max n_i`` and ``N = sum n_i``:
        zero padding rows, and the flat indices ``b * G + g`` of the real rows (what
        :func:`ssd.box_utils.match_indexed` takes).
    """
    if isinstance(targets, torch.Tensor) and targets.dim() == 3:
        targets = list(targets)
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of [n, 5] tensors, not {type(targets).__name__}")
    if not targets:
        raise ValueError("targets is empty: expected one [n, 5] tensor per image")
    rows = []
    for i, t in enumerate(targets):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"targets[{i}] must be a tensor, not {type(t).__name__}")
        if t.dim() == 1 and t.numel() == 0:
            t = t.reshape(0, 5)
        if t.dim() != 2 or t.size(1) != 5:
            raise ValueError(
                f"targets[{i}] must have shape [n, 5] (x1, y1, x2, y2, label), "
                f"got {tuple(t.shape)}")
        rows.append(t)
    src = rows[0].device
    device = torch.device(device) if device is not None else src
    counts = [r.size(0) for r in rows]
    batch, n_gt = len(rows), max(counts)
    flat = torch.cat([r.to(device=src, dtype=dtype) for r in rows])  # [N, 5]
    if src.type == "cpu" and flat.numel():
        _check_values(flat, counts, num_classes)
    # Row r of image b goes to slot b * G + (its rank within the image); the slot travels as an
    # extra column so that boxes and indices cross to the device in one copy.
    count_t = torch.tensor(counts, device=src)
    img = torch.repeat_interleave(torch.arange(batch, device=src), count_t,
                                  output_size=flat.size(0))
    first = torch.cumsum(count_t, 0) - count_t
    slot = torch.arange(flat.size(0), device=src) - first[img] + img * n_gt
    packed = torch.cat([flat, slot[:, None].to(dtype)], dim=1).to(device, non_blocking=True)
    real_index = packed[:, 5].long()
    padded = packed.new_zeros(batch * n_gt, 5).index_copy_(0, real_index, packed[:, :5])
    return padded.view(batch, n_gt, 5), real_index


def _check_values(flat: torch.Tensor, counts: list[int], num_classes: int | None) -> None:
    """Reject boxes without area and out-of-range labels (checked where it costs no sync)."""
    image = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    flat_boxes = flat[:, :4]
    bad = ~((flat_boxes[:, 2] > flat_boxes[:, 0]) & (flat_boxes[:, 3] > flat_boxes[:, 1]))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"targets[{int(image[i])}] has a box without area (need x2 > x1 and y2 > y1): "
            f"{flat[i, :4].tolist()}")
    if num_classes is not None:
        labels = flat[:, 4]
        bad = (labels < 0) | (labels > num_classes - 2)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"targets[{int(image[i])}] has label {labels[i].item():g}: labels must be in "
                f"[0, {num_classes - 2}] for num_classes={num_classes} (0-based, background "
                f"excluded)")


class _PerRowCrossEntropy(torch.autograd.Function):
    """``-log_softmax(logits)[target]`` per row, ``[M, C], [M] -> [M]``.

    The same values and gradients as ``F.cross_entropy(..., reduction="none")``, with a
    one-pass backward (``softmax - onehot``, scaled). The loss evaluates it for every prior of
    the batch but only a few percent of them get a gradient; with ``sparse_backward`` only
    those rows are computed (finding them costs a synchronisation on a GPU, nothing on the CPU).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, target: torch.Tensor,
                sparse_backward: bool = False) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=1)
        ctx.save_for_backward(log_probs, target)
        ctx.sparse_backward = sparse_backward
        return log_probs.gather(1, target[:, None]).squeeze(1).neg_()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        log_probs, target = ctx.saved_tensors
        if ctx.sparse_backward:
            rows = grad.nonzero().squeeze(1)
            part = _softmax_minus_onehot(log_probs[rows], target[rows]).mul_(grad[rows, None])
            grad_logits = torch.zeros_like(log_probs)
            grad_logits[rows] = part
        else:
            grad_logits = _softmax_minus_onehot(log_probs, target).mul_(grad[:, None])
        return grad_logits, None, None


def _softmax_minus_onehot(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[M, C]`` gradient of the cross entropy w.r.t. the logits, from the log-probabilities."""
    out = log_probs.exp()
    return out.scatter_add_(1, target[:, None], out.new_full((target.numel(), 1), -1.0))


def hard_negatives(mining: torch.Tensor, num_neg: torch.Tensor,
                   allow_topk: bool = False) -> torch.Tensor:
    """ssd.pytorch's negative selection: ``rank < num_neg`` in a descending sort of each row.

    Args:
        mining: ``[B, P]`` per-prior losses (positives already set to 0).
        num_neg: ``[B, 1]`` int64 number of priors to keep per row.
        allow_topk: try the cheaper ``topk`` route first (it needs the largest ``num_neg`` on
            the host, free on the CPU but a synchronisation on a GPU, where sorting is cheap).

    Returns:
        ``[B, P]`` bool mask. ``sort`` decides how equal values straddling a row's cut are split;
        the ``topk`` route is only taken when no such tie exists, where the kept set is the
        same whatever the order of ties, and falls back to the sort otherwise.
    """
    n_priors = mining.size(1)
    if allow_topk:
        k = int(num_neg.max()) if num_neg.numel() else 0
        if k == 0:
            return torch.zeros_like(mining, dtype=torch.bool)
        if k <= n_priors // 4:  # beyond that, topk is no cheaper than the sort
            top = mining.topk(k, dim=1).values  # [B, k], descending
            cut = top.gather(1, (num_neg - 1).clamp(min=0))  # each row's num_neg-th largest
            at_or_above = mining >= cut
            has = num_neg > 0
            # The num_neg-th largest value is unique at the cut exactly when num_neg values
            # reach it; otherwise the sort's tie order matters and the sort decides.
            if bool(((at_or_above.sum(1, keepdim=True) == num_neg) | ~has).all()):
                return at_or_above & has
    _, order = mining.sort(dim=1, descending=True)
    # ssd.pytorch sorted `order` again to get each prior's rank; the inverse permutation is the
    # same thing, scattered instead of sorted.
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_priors, device=mining.device).expand_as(order))
    return rank < num_neg


class MultiBoxLoss(nn.Module):
    """SSD loss with ssd.pytorch's constructor; returns ``(loss_l, loss_c)``.

    Only ``num_classes``, ``overlap_thresh`` and ``neg_pos`` change the result; the other
    arguments are kept for signature compatibility (ssd.pytorch ignored them too: it always
    mined negatives, labelled background as class 0 and encoded with the given variances).
    The computation runs on the predictions' device, whatever ``use_gpu`` says, and in float32
    (float64 inputs stay float64) even under autocast.
    """

    def __init__(self, num_classes: int, overlap_thresh: float, prior_for_matching: bool,
                 bkg_label: int, neg_mining: bool, neg_pos: float, neg_overlap: float,
                 encode_target: bool, use_gpu: bool = True,
                 variance: Sequence[float] | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.threshold = float(overlap_thresh)
        self.background_label = bkg_label
        self.encode_target = encode_target
        self.use_prior_for_matching = prior_for_matching
        self.do_neg_mining = neg_mining
        self.negpos_ratio = neg_pos
        self.neg_overlap = neg_overlap
        self.use_gpu = use_gpu
        self.variance = tuple(variance if variance is not None else voc["variance"])

    def forward(self, predictions: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the two loss terms.

        Args:
            predictions: ``(loc [B, P, 4], conf [B, P, C], priors [P', 4])``, ``P' >= P``
                (only the first ``P`` priors are used).
            targets: ``B`` tensors ``[n_i, 5]`` ``(x1, y1, x2, y2, label)``, any device.

        Returns:
            ``(loss_l, loss_c)``: scalar tensors, each a sum divided by ``max(N, 1)`` with ``N``
            the number of positive priors in the batch.
        """
        loc_data, conf_data, priors = predictions[:3]
        if loc_data.dim() != 3 or loc_data.size(-1) != 4:
            raise ValueError(f"loc predictions must be [B, P, 4], got {tuple(loc_data.shape)}")
        batch, n_priors = loc_data.shape[:2]
        if conf_data.shape != (batch, n_priors, self.num_classes):
            raise ValueError(
                f"conf predictions must be [B, P, num_classes] = "
                f"{(batch, n_priors, self.num_classes)}, got {tuple(conf_data.shape)}")
        if priors.dim() != 2 or priors.size(-1) != 4 or priors.size(0) < n_priors:
            raise ValueError(f"priors must be [>= {n_priors}, 4], got {tuple(priors.shape)}")
        if len(targets) != batch:
            raise ValueError(f"got {len(targets)} target tensors for a batch of {batch}")
        device = loc_data.device
        dtype = torch.promote_types(loc_data.dtype, torch.float32)

        with torch.autocast(device_type=device.type, enabled=False):
            return self._loss(loc_data.to(dtype), conf_data.to(dtype),
                              priors[:n_priors].to(device=device, dtype=dtype), targets)

    def _loss(self, loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
              targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        batch, n_priors = loc.shape[:2]
        padded, real_index = pad_targets(targets, loc.device, self.num_classes, loc.dtype)
        with torch.no_grad():
            loc_t, conf_t = match_indexed(self.threshold, padded[..., :4], padded[..., 4],
                                          real_index, priors, self.variance)
        pos = conf_t > 0  # [B, P]

        # Localisation: smooth L1 over the positive priors. The other priors get their own
        # prediction as target: a zero term with a zero gradient (for finite predictions), and
        # no per-prior loss tensor to build and differentiate.
        target_l = torch.where(pos[..., None], loc_t, loc.detach())
        loss_l = F.smooth_l1_loss(loc, target_l, reduction="sum", beta=1.0)

        # Per-prior cross entropy, numerically stable (log-softmax).
        ce = _PerRowCrossEntropy.apply(conf.reshape(-1, self.num_classes), conf_t.reshape(-1),
                                       conf.device.type == "cpu")
        ce = ce.reshape(batch, n_priors)

        # Hard negative mining on the detached losses, positives counted as 0.
        with torch.no_grad():
            mining = ce.detach().masked_fill(pos, 0.0)
            num_pos = pos.long().sum(dim=1, keepdim=True)
            num_neg = torch.clamp(self.negpos_ratio * num_pos, max=n_priors - 1).long()
            selected = pos | hard_negatives(mining, num_neg,
                                            allow_topk=mining.device.type == "cpu")

        loss_c = torch.where(selected, ce, ce.new_zeros(())).sum()
        n_total = num_pos.sum().clamp(min=1).to(loc.dtype)
        return loss_l / n_total, loss_c / n_total
