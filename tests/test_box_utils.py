"""Box arithmetic and matching: hand-worked cases and a per-image loop reference."""

import math

import pytest
import torch

from ssd.box_utils import (
    center_size,
    decode,
    encode,
    intersect,
    jaccard,
    match,
    match_batch,
    match_indexed,
    point_form,
)

VAR = (0.1, 0.2)


def test_point_form_center_size_by_hand():
    c = torch.tensor([[0.5, 0.4, 0.2, 0.6]])
    p = torch.tensor([[0.4, 0.1, 0.6, 0.7]])
    torch.testing.assert_close(point_form(c), p)
    torch.testing.assert_close(center_size(p), c)
    batched = torch.rand(3, 7, 4)
    torch.testing.assert_close(center_size(point_form(batched)), batched)


def test_jaccard_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0],   # overlaps a[0] in a 1x1 square
                      [0.0, 0.0, 2.0, 2.0],   # equals a[0], contains a[1]
                      [2.0, 0.0, 3.0, 1.0],   # touches a[0] along an edge
                      [5.0, 5.0, 6.0, 7.0]])  # far away
    want = torch.tensor([[1 / 7, 1.0, 0.0, 0.0],
                         [0.0, 1 / 4, 0.0, 0.0]])
    torch.testing.assert_close(jaccard(a, b), want)
    torch.testing.assert_close(intersect(a, b), torch.tensor([[1.0, 4.0, 0.0, 0.0],
                                                              [0.0, 1.0, 0.0, 0.0]]))


def test_jaccard_batched_equals_per_image_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 5, 2, generator=g)
    truths = torch.cat([xy, xy + 0.3 * torch.rand(3, 5, 2, generator=g) + 0.01], -1)
    pxy = torch.rand(40, 2, generator=g)
    priors = torch.cat([pxy, pxy + 0.2], -1)
    batched = jaccard(truths, priors)
    assert batched.shape == (3, 5, 40)
    for b in range(3):
        torch.testing.assert_close(batched[b], jaccard(truths[b], priors))
    t = truths[0].double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: jaccard(x, priors.double()), (t,))


def test_encode_by_hand_and_decode_round_trip():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    gt = torch.tensor([[0.4, 0.45, 0.7, 0.65]])  # centre (0.55, 0.55), size (0.3, 0.2)
    want = torch.tensor([[0.05 / 0.02, 0.05 / 0.02, math.log(1.5) / 0.2, 0.0]])
    torch.testing.assert_close(encode(gt, prior, VAR), want)
    torch.testing.assert_close(decode(want, prior, VAR), gt)

    g = torch.Generator().manual_seed(1)
    pxy = torch.rand(50, 2, generator=g)
    priors = torch.cat([pxy, 0.05 + 0.5 * torch.rand(50, 2, generator=g)], -1)
    loc = torch.randn(4, 50, 4, generator=g)
    boxes = decode(loc, priors, VAR)
    assert boxes.shape == (4, 50, 4)
    torch.testing.assert_close(encode(boxes, priors, VAR), loc, rtol=1e-4, atol=1e-4)
    for b in range(4):
        torch.testing.assert_close(decode(loc[b], priors, VAR), boxes[b])


def test_decode_order_of_operations():
    # x2 is x1 + w (not cx + w / 2): check with values where the two differ in float32
    loc = torch.tensor([[0.3, -0.7, 0.11, -0.23]])
    prior = torch.tensor([[0.123, 0.456, 0.0789, 0.31]])
    cx = prior[:, 0] + loc[:, 0] * 0.1 * prior[:, 2]
    w = prior[:, 2] * torch.exp(loc[:, 2] * 0.2)
    x1 = cx - w / 2
    out = decode(loc, prior, VAR)
    assert torch.equal(out[:, 0], x1)
    assert torch.equal(out[:, 2], x1 + w)


# --- matching -------------------------------------------------------------------------------

def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_match(threshold, truths, labels, priors):
    """One image, written out with Python loops, following ssd.pytorch's rules."""
    corners = point_form(priors).tolist()
    gts = truths.tolist()
    n_gt, n_p = len(gts), len(corners)
    overlaps = [[_iou(t, p) for p in corners] for t in gts]
    best_truth_overlap, best_truth_idx = [], []
    for p in range(n_p):
        col = [overlaps[g][p] for g in range(n_gt)]
        best = max(col)
        best_truth_overlap.append(best)
        best_truth_idx.append(col.index(best))  # first GT on ties
    best_prior_idx = [row.index(max(row)) for row in overlaps]  # first prior on ties
    for g in range(n_gt):
        best_truth_overlap[best_prior_idx[g]] = 2.0
    for g in range(n_gt):  # in order: a later GT takes a shared best prior
        best_truth_idx[best_prior_idx[g]] = g
    conf = torch.tensor([int(labels[best_truth_idx[p]]) + 1 if best_truth_overlap[p] >= threshold
                         else 0 for p in range(n_p)])
    loc = encode(truths[torch.tensor(best_truth_idx)], priors, VAR)
    return loc, conf


def _grid_priors(n=6, size=0.3):
    centres = (torch.arange(n) + 0.5) / n
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    wh = torch.full((n * n, 2), size)
    return torch.cat([torch.stack([cx.flatten(), cy.flatten()], 1), wh], 1)


def _random_truths(g, n):
    xy = torch.rand(n, 2, generator=g) * 0.7
    wh = 0.05 + 0.3 * torch.rand(n, 2, generator=g)
    return torch.cat([xy, xy + wh], 1)


def test_match_single_image_vs_reference():
    g = torch.Generator().manual_seed(2)
    priors = torch.cat([_grid_priors(6, 0.3), _grid_priors(4, 0.45)])
    for _ in range(5):
        truths = _random_truths(g, 4)
        labels = torch.randint(0, 20, (4,), generator=g).float()
        loc_t = torch.zeros(2, priors.size(0), 4)
        conf_t = torch.zeros(2, priors.size(0), dtype=torch.long)
        match(0.5, truths, priors, VAR, labels, loc_t, conf_t, 1)
        want_loc, want_conf = reference_match(0.5, truths, labels, priors)
        assert torch.equal(conf_t[1], want_conf)
        torch.testing.assert_close(loc_t[1], want_loc)
        assert (conf_t[0] == 0).all() and (loc_t[0] == 0).all()
        assert (conf_t[1] > 0).sum() >= 1


def test_shared_best_prior_goes_to_the_later_gt():
    priors = _grid_priors(4, 0.25)  # prior 5 is the cell centred at (0.375, 0.375)
    truths = torch.tensor([[0.25, 0.25, 0.50, 0.50],   # exactly prior 5: IoU 1
                           [0.26, 0.26, 0.49, 0.49],   # best prior 5 as well, IoU 0.85
                           [0.70, 0.70, 0.95, 0.95]])
    labels = torch.tensor([3.0, 7.0, 1.0])
    loc, conf = match_batch(0.5, truths[None], labels[None], None, priors, VAR)
    # prior 5 prefers GT 0 by IoU, but GT 1 claims it later and wins: label 7 + 1
    assert jaccard(truths[:2], point_form(priors[5:6])).argmax() == 0
    assert conf[0, 5] == 8
    torch.testing.assert_close(loc[0, 5], encode(truths[1:2], priors[5:6], VAR)[0])
    # GT 0 lost its only good prior: nothing else reaches 0.5 with it, so no prior is labelled 4
    assert not (conf[0] == 4).any()
    want_loc, want_conf = reference_match(0.5, truths, labels, priors)
    assert torch.equal(conf[0], want_conf)
    torch.testing.assert_close(loc[0], want_loc)


def test_low_iou_gt_still_gets_its_best_prior():
    priors = _grid_priors(3, 0.3)
    truths = torch.tensor([[0.45, 0.45, 0.5, 0.5]])  # tiny: best IoU ~0.03
    labels = torch.tensor([4.0])
    overlaps = jaccard(truths, point_form(priors))
    assert overlaps.max() < 0.5
    loc, conf = match_batch(0.5, truths[None], labels[None], None, priors, VAR)
    best = int(overlaps.argmax())
    assert conf[0, best] == 5
    assert (conf[0] > 0).sum() == 1
    torch.testing.assert_close(loc[0, best], encode(truths, priors[best:best + 1], VAR)[0])


def test_ties_between_gts_go_to_the_first_gt():
    priors = _grid_priors(2, 0.5)
    box = [0.0, 0.0, 0.5, 0.5]
    truths = torch.tensor([box, [0.5, 0.5, 1.0, 1.0], box])  # GTs 0 and 2 identical
    labels = torch.tensor([0.0, 1.0, 2.0])
    _, conf = match_batch(0.5, truths[None], labels[None], None, priors, VAR)
    # prior 0 is the best prior of both GT 0 and GT 2: forced to the later one (label 2)
    assert conf[0, 0] == 3
    _, want = reference_match(0.5, truths, labels, priors)
    assert torch.equal(conf[0], want)


def test_padded_batch_equals_per_image_and_empty_images():
    g = torch.Generator().manual_seed(3)
    priors = torch.cat([_grid_priors(8, 0.2), _grid_priors(5, 0.4), _grid_priors(2, 0.8)])
    counts = [3, 0, 5, 1]
    gmax = max(counts)
    truths = torch.zeros(4, gmax, 4)
    labels = torch.zeros(4, gmax)
    mask = torch.zeros(4, gmax, dtype=torch.bool)
    for b, n in enumerate(counts):
        truths[b, :n] = _random_truths(g, n)
        truths[b, n:] = torch.rand(gmax - n, 4, generator=g)  # garbage padding must not matter
        labels[b, :n] = torch.randint(0, 20, (n,), generator=g).float()
        labels[b, n:] = 99
        mask[b, :n] = True
    loc_m, conf_m = match_batch(0.5, truths, labels, mask, priors, VAR)
    loc_c, conf_c = match_batch(0.5, truths, labels, torch.tensor(counts), priors, VAR)
    assert loc_m.shape == (4, priors.size(0), 4) and conf_m.dtype == torch.long
    assert torch.equal(conf_m, conf_c) and torch.equal(loc_m, loc_c)
    for b, n in enumerate(counts):
        if n == 0:
            assert (conf_m[b] == 0).all()
            assert torch.isfinite(loc_m[b]).all()
            continue
        want_loc, want_conf = reference_match(0.5, truths[b, :n], labels[b, :n], priors)
        assert torch.equal(conf_m[b], want_conf)
        torch.testing.assert_close(loc_m[b], want_loc)
    # the same real rows given as flat indices, in a scrambled order
    real = mask.flatten().nonzero().squeeze(1)
    real = real[torch.randperm(real.numel(), generator=g)]
    loc_i, conf_i = match_indexed(0.5, truths, labels, real, priors, VAR)
    assert torch.equal(conf_i, conf_m) and torch.equal(loc_i, loc_m)


def test_batch_without_any_gt():
    priors = _grid_priors(3, 0.3)
    loc, conf = match_batch(0.5, torch.zeros(2, 0, 4), torch.zeros(2, 0), None, priors, VAR)
    assert loc.shape == (2, 9, 4) and (conf == 0).all() and torch.isfinite(loc).all()


def test_match_many_random_images_vs_reference():
    g = torch.Generator().manual_seed(4)
    priors = torch.cat([_grid_priors(10, 0.15), _grid_priors(5, 0.35), _grid_priors(3, 0.6)])
    counts = torch.randint(0, 7, (12,), generator=g).tolist()
    gmax = max(counts)
    truths = torch.zeros(12, gmax, 4)
    labels = torch.zeros(12, gmax)
    for b, n in enumerate(counts):
        truths[b, :n] = _random_truths(g, n)
        labels[b, :n] = torch.randint(0, 20, (n,), generator=g).float()
    for thr in (0.5, 0.3):
        loc, conf = match_batch(thr, truths, labels, torch.tensor(counts), priors, VAR)
        for b, n in enumerate(counts):
            if n:
                want_loc, want_conf = reference_match(thr, truths[b, :n], labels[b, :n], priors)
                assert torch.equal(conf[b], want_conf)
                torch.testing.assert_close(loc[b], want_loc)


def test_match_bad_shapes():
    priors = _grid_priors(2, 0.5)
    with pytest.raises(ValueError, match="truths"):
        match_batch(0.5, torch.zeros(3, 4), torch.zeros(3), None, priors, VAR)
    with pytest.raises(ValueError, match="labels"):
        match_batch(0.5, torch.zeros(1, 3, 4), torch.zeros(1, 2), None, priors, VAR)
    with pytest.raises(ValueError, match="valid"):
        match_batch(0.5, torch.zeros(1, 3, 4), torch.zeros(1, 3),
                    torch.ones(2, 3, dtype=torch.bool), priors, VAR)
