"""MultiBoxLoss: a hand-worked case and a per-image reference (values and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssd.box_utils import match
from ssd.config import voc
from ssd.loss import MultiBoxLoss, _PerRowCrossEntropy, hard_negatives, pad_targets
from ssd.priors import prior_boxes

VAR = (0.1, 0.2)


def make_loss(num_classes):
    # the call of ssd.pytorch's train.py
    return MultiBoxLoss(num_classes, 0.5, True, 0, True, 3, 0.5, False, False)


def reference_loss(loc, conf, priors, targets, num_classes, threshold=0.5, neg_pos=3):
    """ssd.pytorch's steps, one image at a time (global-max log-sum-exp for the mining)."""
    batch, n_priors = loc.shape[:2]
    priors = priors[:n_priors]
    loc_t = torch.zeros(batch, n_priors, 4, dtype=loc.dtype)
    conf_t = torch.zeros(batch, n_priors, dtype=torch.long)
    for b, t in enumerate(targets):
        if t.size(0):
            match(threshold, t[:, :4].to(loc.dtype), priors.to(loc.dtype), VAR, t[:, 4],
                  loc_t, conf_t, b)
    pos = conf_t > 0
    loss_l = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    with torch.no_grad():
        flat = conf.reshape(-1, num_classes)
        x_max = flat.max()
        lse = torch.log(torch.sum(torch.exp(flat - x_max), 1)) + x_max
        mining = (lse - flat.gather(1, conf_t.reshape(-1, 1)).squeeze(1)).reshape(batch, -1)
    neg = torch.zeros_like(pos)
    for b in range(batch):
        row = mining[b].clone()
        row[pos[b]] = 0
        _, order = row.sort(descending=True)
        _, rank = order.sort()
        num_neg = min(neg_pos * int(pos[b].sum()), n_priors - 1)
        neg[b] = rank < num_neg
    sel = pos | neg
    loss_c = F.cross_entropy(conf[sel], conf_t[sel], reduction="sum")
    n = max(int(pos.sum()), 1)
    return loss_l / n, loss_c / n


def _grid_priors(n, size):
    centres = (torch.arange(n) + 0.5) / n
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    return torch.cat([torch.stack([cx.flatten(), cy.flatten()], 1),
                      torch.full((n * n, 2), size)], 1)


def _random_targets(g, counts, num_classes):
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * 0.6
        wh = 0.05 + 0.35 * torch.rand(n, 2, generator=g)
        label = torch.randint(0, num_classes - 1, (n, 1), generator=g).float()
        out.append(torch.cat([xy, xy + wh, label], 1))
    return out


def test_hand_worked_case():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                           [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5],
                           [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 0.2, 0.2]])
    # one GT, label 1 (class 2): IoU 0.9 with prior 0, 0.25 with prior 4, < 0.05 elsewhere
    targets = [torch.tensor([[0.05, 0.0, 0.5, 0.5, 1.0]])]
    loc = torch.zeros(1, 6, 4)
    loc[0, 1:] = 5.0  # background priors' offsets must not count
    loc.requires_grad_(True)
    conf = torch.tensor([[[0.0, 0.0, 2.0],    # positive, target class 2
                          [0.0, 0.0, 0.0],    # CE log 3
                          [2.0, 0.0, 0.0],    # confident background: CE log(e^2 + 2) - 2
                          [0.0, 1.0, 0.0],    # CE log(2 + e)
                          [0.0, 3.0, 0.0],    # CE log(2 + e^3): the hardest negative
                          [1.0, 0.0, 0.0]]],  # CE log(e + 2) - 1
                        requires_grad=True)
    loss_l, loss_c = make_loss(3)((loc, conf, priors), targets)

    # prior 0 = (0.25, 0.25, 0.5, 0.5); GT centre (0.275, 0.25), size (0.45, 0.5)
    t = [(0.275 - 0.25) / (0.1 * 0.5), 0.0, math.log(0.45 / 0.5) / 0.2, 0.0]
    want_l = sum(0.5 * v * v for v in t)  # all |d| < 1: the quadratic branch of smooth L1
    ce_pos = math.log(2 + math.exp(2)) - 2
    negatives = sorted([math.log(3), math.log(math.exp(2) + 2) - 2, math.log(2 + math.e),
                        math.log(2 + math.exp(3)), math.log(math.e + 2) - 1], reverse=True)
    want_c = ce_pos + sum(negatives[:3])  # num_neg = 3 * 1 positive
    assert loss_l.item() == pytest.approx(want_l, rel=1e-5)
    assert loss_c.item() == pytest.approx(want_c, rel=1e-5)

    g_loc, g_conf = torch.autograd.grad(loss_l + loss_c, (loc, conf))
    assert (g_loc[0, 1:] == 0).all()
    torch.testing.assert_close(g_loc[0, 0], -torch.tensor(t))  # d/dx 0.5 (x - t)^2 at x = 0
    # priors 2 and 5 are the easy negatives: not selected, no gradient
    assert (g_conf[0, 2] == 0).all() and (g_conf[0, 5] == 0).all()
    expected_row4 = torch.softmax(conf[0, 4].detach(), 0) - torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(g_conf[0, 4], expected_row4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batches_match_reference_values_and_gradients(seed):
    g = torch.Generator().manual_seed(seed)
    num_classes = 5
    priors = torch.cat([_grid_priors(10, 0.15), _grid_priors(5, 0.35), _grid_priors(3, 0.6),
                        _grid_priors(1, 0.9)])
    counts = [2, 0, 4, 1, 3]
    targets = _random_targets(g, counts, num_classes)
    p = priors.size(0)
    loc = (0.5 * torch.randn(5, p, 4, generator=g)).requires_grad_(True)
    conf = torch.randn(5, p, num_classes, generator=g).requires_grad_(True)
    extra = torch.cat([priors, torch.rand(7, 4, generator=g)])  # only priors[:P] are used
    got = make_loss(num_classes)((loc, conf, extra), targets)
    want = reference_loss(loc, conf, priors, targets, num_classes)
    for a, b in zip(got, want):
        assert a.dtype == torch.float32 and a.dim() == 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    g_got = torch.autograd.grad(got[0] + 2 * got[1], (loc, conf))
    g_want = torch.autograd.grad(want[0] + 2 * want[1], (loc, conf))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (g_got[1][1] != 0).sum() == 0  # the empty image: no positives, so no negatives


def test_ssd300_sized_batch_matches_reference():
    g = torch.Generator().manual_seed(5)
    priors = prior_boxes(voc)
    targets = _random_targets(g, [3, 1], 21)
    loc = torch.randn(2, 8732, 4, generator=g).requires_grad_(True)
    conf = torch.randn(2, 8732, 21, generator=g).requires_grad_(True)
    got = make_loss(21)((loc, conf, priors), targets)
    want = reference_loss(loc, conf, priors, targets, 21)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(sum(got), (loc, conf)),
                    torch.autograd.grad(sum(want), (loc, conf))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_num_neg_is_capped_at_p_minus_one():
    priors = _grid_priors(3, 0.34)
    # one GT per cell: every prior is positive except one, so 3 * num_pos > P - 1
    cells = []
    for i in range(3):
        for j in range(3):
            if (i, j) != (2, 2):
                point = [j / 3, i / 3, (j + 1) / 3, (i + 1) / 3, 1.0]
                cells.append(point)
    targets = [torch.tensor(cells)]
    g = torch.Generator().manual_seed(6)
    loc = torch.randn(1, 9, 4, generator=g, requires_grad=True)
    conf = torch.randn(1, 9, 3, generator=g, requires_grad=True)
    got = make_loss(3)((loc, conf, priors), targets)
    want = reference_loss(loc, conf, priors, targets, 3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    # all 9 priors selected: 8 positives and the one negative
    g_conf = torch.autograd.grad(got[1], conf)[0]
    assert (g_conf.abs().sum(-1) > 0).all()


def test_all_empty_batch_gives_finite_zero_loss():
    loc = torch.randn(3, 36, 4, requires_grad=True)
    conf = torch.randn(3, 36, 4, requires_grad=True)
    targets = [torch.zeros(0, 5), torch.zeros(0, 5), torch.empty(0)]
    loss_l, loss_c = make_loss(4)((loc, conf, _grid_priors(6, 0.3)), targets)
    assert loss_l.item() == 0.0 and loss_c.item() == 0.0
    (loss_l + loss_c).backward()
    assert (loc.grad == 0).all() and (conf.grad == 0).all()


def test_bf16_autocast_on_cpu():
    g = torch.Generator().manual_seed(7)
    priors = torch.cat([_grid_priors(8, 0.2), _grid_priors(4, 0.5)])
    targets = _random_targets(g, [2, 3], 6)
    loc = torch.randn(2, priors.size(0), 4, generator=g)
    conf = torch.randn(2, priors.size(0), 6, generator=g)
    crit = make_loss(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_bf = crit((loc.bfloat16(), conf.bfloat16(), priors), targets)
    for value in loss_bf:
        assert value.dtype == torch.float32 and torch.isfinite(value)
    exact = crit((loc.bfloat16().float(), conf.bfloat16().float(), priors), targets)
    for a, b in zip(loss_bf, exact):
        torch.testing.assert_close(a, b)
    full = crit((loc, conf, priors), targets)
    for a, b in zip(loss_bf, full):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_float64_stays_float64_and_gradcheck():
    g = torch.Generator().manual_seed(8)
    priors = _grid_priors(4, 0.4).double()
    targets = _random_targets(g, [1, 2], 3)
    loc = torch.randn(2, 16, 4, generator=g, dtype=torch.float64, requires_grad=True)
    conf = torch.randn(2, 16, 3, generator=g, dtype=torch.float64, requires_grad=True)
    crit = make_loss(3)
    out = crit((loc, conf, priors), targets)
    assert out[0].dtype == torch.float64
    assert torch.autograd.gradcheck(lambda a, b: sum(crit((a, b, priors), targets)), (loc, conf),
                                    fast_mode=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_per_row_cross_entropy_matches_torch(sparse):
    g = torch.Generator().manual_seed(9)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, 5, (20,), generator=g)
    torch.testing.assert_close(_PerRowCrossEntropy.apply(x, t, sparse),
                               F.cross_entropy(x, t, reduction="none"))
    assert torch.autograd.gradcheck(lambda a: _PerRowCrossEntropy.apply(a, t, sparse), (x,))
    # a gradient on some rows only (the loss's case): equal to torch's
    weight = (torch.rand(20, generator=g) < 0.3).double() * torch.rand(20, generator=g)
    got = torch.autograd.grad((_PerRowCrossEntropy.apply(x, t, sparse) * weight).sum(), x)[0]
    want = torch.autograd.grad((F.cross_entropy(x, t, reduction="none") * weight).sum(), x)[0]
    torch.testing.assert_close(got, want)
    assert (got[weight == 0] == 0).all()
    big = torch.tensor([[1000.0, 0.0, -1000.0]])  # stable for huge logits
    assert torch.isfinite(_PerRowCrossEntropy.apply(big, torch.tensor([2]), sparse)).all()


def test_pad_targets_layout():
    targets = [torch.tensor([[0.1, 0.1, 0.2, 0.2, 3.0]]), torch.zeros(0, 5),
               torch.tensor([[0.3, 0.3, 0.4, 0.4, 1.0], [0.5, 0.5, 0.6, 0.6, 2.0]])]
    padded, real = pad_targets(targets)
    assert padded.shape == (3, 2, 5)
    assert real.tolist() == [0, 4, 5]
    torch.testing.assert_close(padded[0, 0], targets[0][0])
    torch.testing.assert_close(padded[2], targets[2])
    assert (padded[0, 1] == 0).all() and (padded[1] == 0).all()


@pytest.mark.parametrize("bad,match", [
    ([torch.zeros(2, 4), torch.zeros(1, 5)], r"targets\[0\] must have shape \[n, 5\]"),
    ([torch.zeros(1, 5), torch.zeros(5)], r"targets\[1\] must have shape \[n, 5\]"),
    ([torch.zeros(1, 5)], "1 target tensors for a batch of 2"),
    ([torch.tensor([[0.1, 0.1, 0.2, 0.2, 3.0]]), torch.zeros(0, 5)],
     r"targets\[0\] has label 3: labels must be in \[0, 2\]"),
    ([torch.zeros(0, 5), torch.tensor([[0.1, 0.1, 0.2, 0.2, -1.0]])],
     r"targets\[1\] has label -1"),
    ([torch.zeros(0, 5), torch.tensor([[0.1, 0.1, 0.2, 0.2, 0], [0.3, 0.1, 0.3, 0.2, 0]])],
     r"targets\[1\] has a box without area"),
])
def test_bad_targets_raise_clear_errors(bad, match):
    loc = torch.zeros(2, 9, 4)
    conf = torch.zeros(2, 9, 4)
    with pytest.raises(ValueError, match=match):
        make_loss(4)((loc, conf, _grid_priors(3, 0.3)), bad)


def test_bad_prediction_shapes():
    crit = make_loss(4)
    with pytest.raises(ValueError, match="conf predictions"):
        crit((torch.zeros(1, 9, 4), torch.zeros(1, 9, 3), _grid_priors(3, 0.3)),
             [torch.zeros(0, 5)])
    with pytest.raises(ValueError, match="priors"):
        crit((torch.zeros(1, 9, 4), torch.zeros(1, 9, 4), _grid_priors(2, 0.3)),
             [torch.zeros(0, 5)])


def _double_sort_selection(mining, num_neg):
    """ssd.pytorch's formulation, literally: rank = argsort of the descending sort's indices."""
    _, loss_idx = mining.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    return idx_rank < num_neg


@pytest.mark.parametrize("allow_topk", [False, True])
@pytest.mark.parametrize("kind", ["continuous", "ties", "many_positives", "no_positives"])
def test_hard_negatives_equal_the_double_sort(kind, allow_topk, monkeypatch):
    g = torch.Generator().manual_seed(10)
    batch, n_priors = 6, 400
    if kind == "ties":  # few distinct values: ties straddle the cut, the sort must decide
        mining = torch.randint(0, 4, (batch, n_priors), generator=g).float()
    else:
        mining = 5 * torch.rand(batch, n_priors, generator=g)
    share = {"many_positives": 0.4, "no_positives": 0.0}.get(kind, 0.03)
    pos = torch.rand(batch, n_priors, generator=g) < share
    pos[0] = False  # an image without positives: no negatives either
    mining = mining.masked_fill(pos, 0.0)
    num_neg = (3 * pos.long().sum(1, keepdim=True)).clamp(max=n_priors - 1)
    want = _double_sort_selection(mining, num_neg)
    if allow_topk and kind == "continuous":
        # no ties at the cut: the topk route must answer without sorting
        def no_sort(*args, **kwargs):
            raise AssertionError("sorted although topk sufficed")
        monkeypatch.setattr(torch.Tensor, "sort", no_sort)
    got = hard_negatives(mining, num_neg, allow_topk=allow_topk)
    monkeypatch.undo()
    assert torch.equal(got, want)
    assert torch.equal(got.sum(1, keepdim=True), num_neg)


def test_runs_under_deterministic_algorithms():
    g = torch.Generator().manual_seed(11)
    priors = _grid_priors(6, 0.3)
    targets = _random_targets(g, [2, 0, 1], 4)
    loc = torch.randn(3, 36, 4, generator=g, requires_grad=True)
    conf = torch.randn(3, 36, 4, generator=g, requires_grad=True)
    crit = make_loss(4)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = crit((loc, conf, priors), targets)
        grads = torch.autograd.grad(sum(got), (loc, conf))
    finally:
        torch.use_deterministic_algorithms(before)
    want = crit((loc, conf, priors), targets)
    assert torch.equal(torch.stack(got), torch.stack(want))
    for a, b in zip(grads, torch.autograd.grad(sum(want), (loc, conf))):
        assert torch.equal(a, b)
