"""Prior boxes: counts, hand-worked rows, a straightforward reference, caching, validation."""

import itertools
import math

import pytest
import torch

from ssd.config import CONFIGS, get_config
from ssd.priors import PriorBox, prior_boxes


def reference_priors(cfg):
    """The REFERENCE.md section 3 formulas, cell by cell in Python floats, then float32."""
    rows = []
    size = cfg["min_dim"]
    for k, f in enumerate(cfg["feature_maps"]):
        f_k = size / cfg["steps"][k]
        for i, j in itertools.product(range(f), repeat=2):
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = cfg["min_sizes"][k] / size
            rows.append([cx, cy, s_k, s_k])
            s_big = math.sqrt(s_k * (cfg["max_sizes"][k] / size))
            rows.append([cx, cy, s_big, s_big])
            for ar in cfg["aspect_ratios"][k]:
                rows.append([cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)])
                rows.append([cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)])
    out = torch.tensor(rows, dtype=torch.float32)
    return out.clamp(0, 1) if cfg["clip"] else out


@pytest.mark.parametrize("name,count", [("voc300", 8732), ("coco300", 8732),
                                        ("voc512", 24564), ("coco512", 24564)])
def test_counts_and_bitwise_equal_to_reference(name, count):
    priors = PriorBox(CONFIGS[name]).forward()
    assert priors.shape == (count, 4)
    assert priors.dtype == torch.float32 and priors.device.type == "cpu"
    assert torch.equal(priors, reference_priors(CONFIGS[name]))


def test_voc300_first_rows_by_hand():
    p = PriorBox(CONFIGS["voc300"]).forward().double()
    c = 0.5 / (300 / 8)  # first cell centre: f_k = 37.5
    r2 = math.sqrt(2)
    want = torch.tensor([
        [c, c, 0.1, 0.1],                               # min size 30/300
        [c, c, math.sqrt(0.02), math.sqrt(0.02)],       # sqrt(30/300 * 60/300)
        [c, c, 0.1 * r2, 0.1 / r2],                     # ratio 2
        [c, c, 0.1 / r2, 0.1 * r2],                     # ratio 1/2
        [1.5 / 37.5, c, 0.1, 0.1],                      # next column, same row
    ], dtype=torch.float64)
    torch.testing.assert_close(p[:5], want, rtol=0, atol=1e-7)
    # first cell of the second row of the 38x38 map: index 38 cells * 4 boxes
    torch.testing.assert_close(p[38 * 4, :2], torch.tensor([c, 1.5 / 37.5], dtype=torch.float64),
                               rtol=0, atol=1e-7)
    # the 19x19 map starts after 38*38*4 rows, with 6 boxes per cell (ratios 2 and 3)
    first19 = p[38 * 38 * 4: 38 * 38 * 4 + 6]
    c19 = 0.5 / (300 / 16)
    r3 = math.sqrt(3)
    want19 = torch.tensor([[c19, c19, 0.2, 0.2],
                           [c19, c19, math.sqrt(0.2 * 0.37), math.sqrt(0.2 * 0.37)],
                           [c19, c19, 0.2 * r2, 0.2 / r2], [c19, c19, 0.2 / r2, 0.2 * r2],
                           [c19, c19, 0.2 * r3, 0.2 / r3], [c19, c19, 0.2 / r3, 0.2 * r3]],
                          dtype=torch.float64)
    torch.testing.assert_close(first19, want19, rtol=0, atol=1e-7)


def test_voc300_last_rows_clipped_and_unclipped():
    s, r2 = 264 / 300, math.sqrt(2)
    big = math.sqrt(s * 315 / 300)
    unclipped = torch.tensor([[0.5, 0.5, s, s], [0.5, 0.5, big, big],
                              [0.5, 0.5, s * r2, s / r2], [0.5, 0.5, s / r2, s * r2]],
                             dtype=torch.float64)
    p = PriorBox(CONFIGS["voc300"]).forward().double()
    torch.testing.assert_close(p[-4:], unclipped.clamp(0, 1), rtol=0, atol=1e-7)
    assert p[-2, 2] == 1.0 and p[-1, 3] == 1.0  # s * sqrt(2) = 1.24 was clipped
    cfg = get_config("voc300")
    cfg["clip"] = False
    q = PriorBox(cfg).forward().double()
    torch.testing.assert_close(q[-4:], unclipped, rtol=0, atol=1e-7)
    assert q.max() > 1.0
    assert p.min() >= 0 and p.max() <= 1


def test_cache_returns_equal_independent_tensors_and_dtypes():
    cfg = CONFIGS["voc300"]
    a = prior_boxes(cfg)
    b = prior_boxes(get_config("voc300"))  # an equal dict hits the same cache entry
    assert torch.equal(a, b)
    a.zero_()  # a caller's edits must not reach the cache
    assert torch.equal(prior_boxes(cfg), b)
    d = prior_boxes(cfg, device="cpu", dtype=torch.float64)
    assert d.dtype == torch.float64
    torch.testing.assert_close(d.float(), b, rtol=0, atol=0)
    # float64 keeps the full double precision the float32 tensor was rounded from
    assert (d - b.double()).abs().max() > 0
    assert torch.equal(PriorBox(cfg).forward(), b)


def test_geometry_changes_are_not_served_from_cache():
    cfg = get_config("voc300")
    before = prior_boxes(cfg)
    cfg["min_sizes"] = [31, 60, 111, 162, 213, 264]
    after = prior_boxes(cfg)
    assert not torch.equal(before[0], after[0])
    torch.testing.assert_close(after[0, 2], torch.tensor(31 / 300), rtol=0, atol=1e-7)


@pytest.mark.parametrize("key,value,match", [
    ("steps", [8, 16, 32], "steps has 3 entries but feature_maps has 6"),
    ("aspect_ratios", [[2]] * 5, "aspect_ratios has 5 entries"),
    ("min_sizes", [30, 60, 111, 162, 213, -1], "min_sizes must be positive"),
    ("min_dim", 0, "min_dim"),
    ("aspect_ratios", [[2], [2, 3], [2, 0], [2, 3], [2], [2]], r"aspect_ratios\[2\]"),
])
def test_bad_configs_raise_clear_errors(key, value, match):
    cfg = get_config("voc300")
    cfg[key] = value
    with pytest.raises(ValueError, match=match):
        PriorBox(cfg)
    with pytest.raises(ValueError, match=match):
        prior_boxes(cfg)


def test_missing_key_is_named():
    cfg = get_config("voc300")
    del cfg["max_sizes"]
    with pytest.raises(ValueError, match="max_sizes"):
        prior_boxes(cfg)


def test_clip_rules():
    cfg = get_config("coco300")
    unclipped = prior_boxes({**cfg, "clip": "none"}, dtype=torch.float64)
    assert torch.equal(prior_boxes({**cfg, "clip": "all"}), prior_boxes(cfg))
    assert torch.equal(prior_boxes({**cfg, "clip": False}), unclipped.float())
    wh = prior_boxes({**cfg, "clip": "wh"}, dtype=torch.float64)
    # torchvision's rule: centres as computed (1.0133 on the 10x10 map's last row/column),
    # widths and heights clamped
    assert torch.equal(wh[:, :2], unclipped[:, :2]) and wh[:, :2].max() > 1.01
    assert torch.equal(wh[:, 2:], unclipped[:, 2:].clamp(0, 1))
    assert PriorBox({**cfg, "clip": "wh"}).clip is True
    with pytest.raises(ValueError, match="clip must be"):
        prior_boxes({**cfg, "clip": "centres"})
