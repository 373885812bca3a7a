"""BaseTransform and SSDAugmentation: output contract, the fixed crop rule, the fast path
against a straightforward reference, photometric formulas, seeding."""

from __future__ import annotations

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd.data import (
    CROP_MODES,
    BaseTransform,
    PhotometricDistort,
    RandomSampleCrop,
    SSDAugmentation,
    VOCDetection,
)
from ssd.data.augmentations import AugmentParams, CropParams, PhotometricParams

VOC_MINI = Path(__file__).resolve().parents[1] / "data" / "samples" / "voc_mini" / "VOCdevkit"
MEAN = np.array([104, 117, 123], dtype=np.float32)


@pytest.fixture(scope="module")
def samples():
    """(image, boxes relative [n, 4], labels [n]) for every voc_mini trainval image."""
    ds = VOCDetection(VOC_MINI, [("2007", "trainval")])
    out = []
    for i in range(len(ds)):
        img, target, _, _ = ds.pull_item(i)
        out.append((img.permute(1, 2, 0).numpy().copy(), target[:, :4], target[:, 4]))
    return out


def iou_one(a, b):
    """IoU of two corner boxes (plain Python, the test's own reference)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


# --- BaseTransform ---------------------------------------------------------------------------
def test_base_transform_is_ssd_pytorch_formula(samples):
    img, boxes, labels = samples[0]
    out, b, lab = BaseTransform(300, (104, 117, 123))(img, boxes, labels)
    x = cv2.resize(img, (300, 300)).astype(np.float32)
    x -= (104, 117, 123)
    np.testing.assert_array_equal(out, x.astype(np.float32))
    assert out.dtype == np.float32 and b is boxes and lab is labels
    out512, _, _ = BaseTransform(512)(img)
    assert out512.shape == (512, 512, 3)


# --- output contract over many draws -----------------------------------------------------------
def test_1000_draws_are_valid(samples):
    aug = SSDAugmentation(300, seed=123)
    modes_seen = set()
    mirrored = 0
    for k in range(1000):
        img, boxes, labels = samples[k % len(samples)]
        out, b, lab = aug(img, boxes, labels)
        assert out.shape == (300, 300, 3) and out.dtype == np.float32
        assert out.flags["C_CONTIGUOUS"] and np.isfinite(out).all()
        pixels = out + MEAN
        assert pixels.min() >= 0 and pixels.max() <= 255
        assert b.dtype == np.float32 and lab.dtype == np.float32
        assert b.shape == (len(lab), 4) and len(lab) >= 1  # a kept centre always survives
        assert np.isfinite(b).all() and (b >= 0).all() and (b <= 1).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert set(lab.tolist()) <= set(labels.tolist())
    # the draws above exercised the random parts (checked on the sampler directly)
    rng = np.random.default_rng(0)
    for k in range(300):
        img, boxes, _ = samples[k % len(samples)]
        p = aug.sample(img.shape[0], img.shape[1], boxes, rng)
        modes_seen.add(p.crop.mode)
        mirrored += p.mirror
    assert modes_seen == set(CROP_MODES)
    assert 100 < mirrored < 200


def test_empty_and_unusual_inputs():
    aug = SSDAugmentation(64, seed=0)
    img = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    for _ in range(30):
        out, b, lab = aug(img, np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
        assert out.shape == (64, 64, 3) and b.shape == (0, 4) and lab.shape == (0,)
    out, b, _ = aug(img.astype(np.float32), np.array([[0.1, 0.1, 0.9, 0.9]]), np.array([3.0]))
    assert out.shape == (64, 64, 3) and len(b) == 1
    out, _, _ = aug(img[:, :, 0], np.array([[0.1, 0.1, 0.9, 0.9]]), np.array([3.0]))
    assert out.shape == (64, 64, 3)


# --- the crop rule -------------------------------------------------------------------------------
def test_crop_rule_on_sample_boxes(samples):
    crop = RandomSampleCrop()
    rng = np.random.default_rng(7)
    counts = {m: 0 for m in CROP_MODES}
    for k in range(1500):
        img, rel, _ = samples[k % len(samples)]
        h, w = img.shape[:2]
        boxes = rel.astype(np.float64) * (w, h, w, h)
        p = crop.sample(boxes, w, h, rng)
        counts[p.mode] += 1
        if p.mode is None:
            assert p.rect is None and p.keep.all()
            continue
        x0, y0, x1, y1 = p.rect
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 >= int(0.3 * w) - 1 and y1 - y0 >= int(0.3 * h) - 1
        assert 0.5 * 0.9 <= (y1 - y0) / (x1 - x0) <= 2 / 0.9  # aspect, up to int truncation
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (x0 < cx) & (cx < x1) & (y0 < cy) & (cy < y1)
        np.testing.assert_array_equal(p.keep, inside)  # exactly the GTs with centre inside
        assert inside.any()
        lo, hi = p.mode
        ious = [iou_one(b, p.rect) for b in boxes]
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        assert any(lo <= v <= hi for v in ious), (p.mode, ious)
    assert all(counts[m] > 0 for m in CROP_MODES), counts


def test_crop_rule_rejects_what_ssd_pytorch_accepted():
    rng = np.random.default_rng(0)
    # one GT covering the image: IoU with a patch = patch area / image area
    whole = np.array([[0.0, 0.0, 100.0, 100.0]])
    crop = RandomSampleCrop(modes=[(0.9, None)])
    for _ in range(100):
        p = crop.sample(whole, 100, 100, rng)
        x0, y0, x1, y1 = p.rect
        assert (x1 - x0) * (y1 - y0) >= 0.9 * 100 * 100
    # a tiny GT can never reach IoU 0.7 with a patch of >= 30% of the sides: no crop
    tiny = np.array([[10.0, 10.0, 12.0, 12.0]])
    p = RandomSampleCrop(modes=[(0.7, None)], max_rounds=5).sample(tiny, 100, 100, rng)
    assert p.mode is None and p.rect is None
    # a max IoU bound is honoured too
    crop = RandomSampleCrop(modes=[(None, 0.5)])
    for _ in range(50):
        p = crop.sample(whole, 100, 100, rng)
        assert iou_one(whole[0], p.rect) <= 0.5


def test_cut_boxes_by_hand():
    boxes = np.array([[0, 0, 20, 20], [40, 40, 70, 70], [30, 30, 60, 45]], dtype=np.float64)
    labels = np.array([1.0, 2.0, 3.0])
    params = CropParams((0.1, None), (10, 10, 50, 50), np.array([False, False, True]))
    b, lab = RandomSampleCrop.cut_boxes(boxes, labels, params)
    np.testing.assert_array_equal(b, [[20, 20, 40, 35]])
    np.testing.assert_array_equal(lab, [3.0])
    img = np.zeros((60, 80, 3), np.uint8)
    out, b2, _ = RandomSampleCrop(modes=[(None, None)])(img, boxes, labels,
                                                         np.random.default_rng(1))
    assert out.shape[2] == 3 and len(b2) >= 1


# --- the fast path against a straightforward reference -----------------------------------------
def reference_apply(aug, img, rel, labels, p: AugmentParams):
    """Build the expanded canvas explicitly, crop, mirror, resize, subtract (float boxes)."""
    h, w = img.shape[:2]
    img = PhotometricDistort.apply(img, p.photometric)  # pointwise: same on the whole image
    boxes = rel.astype(np.float64) * (w, h, w, h)
    if p.expand is not None:
        e = p.expand
        canvas = np.empty((e.height, e.width, 3), np.uint8)
        canvas[:] = MEAN.astype(np.uint8)
        canvas[e.top:e.top + h, e.left:e.left + w] = img
        boxes = boxes + (e.left, e.top, e.left, e.top)
    else:
        canvas = img
    if p.crop.rect is not None:
        x0, y0, x1, y1 = p.crop.rect
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        keep = (x0 < cx) & (cx < x1) & (y0 < cy) & (cy < y1)
        boxes = np.stack([np.maximum(boxes[keep, 0], x0) - x0, np.maximum(boxes[keep, 1], y0) - y0,
                          np.minimum(boxes[keep, 2], x1) - x0, np.minimum(boxes[keep, 3], y1) - y0],
                         1)
        labels = labels[keep]
        canvas = canvas[y0:y1, x0:x1]
    ph, pw = canvas.shape[:2]
    if p.mirror:
        canvas = canvas[:, ::-1]
        boxes = np.stack([pw - boxes[:, 2], boxes[:, 1], pw - boxes[:, 0], boxes[:, 3]], 1)
    boxes = boxes / (pw, ph, pw, ph)
    out = cv2.resize(np.ascontiguousarray(canvas), (aug.size, aug.size)).astype(np.float32) - MEAN
    return out, boxes, labels


def test_fast_path_equals_reference(samples):
    aug = SSDAugmentation(300)
    rng = np.random.default_rng(11)
    expanded = mirrored = 0
    for k in range(80):
        img, rel, labels = samples[(k * 7) % len(samples)]
        p = aug.sample(img.shape[0], img.shape[1], rel, rng)
        out, b, lab = aug.apply(img, rel, labels, p)
        ref, rb, rlab = reference_apply(aug, img, rel, labels, p)
        diff = np.abs(out - ref)
        # mirroring after the resize instead of before can move a value by 1 (rounding)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01
        np.testing.assert_allclose(b, rb, atol=1e-6)
        np.testing.assert_array_equal(lab, rlab)
        expanded += p.expand is not None
        mirrored += p.mirror
    assert 20 < expanded < 60 and 20 < mirrored < 60


def test_expand_and_mirror_draws(samples):
    aug = SSDAugmentation(300)
    rng = np.random.default_rng(3)
    img, rel, _ = samples[0]
    h, w = img.shape[:2]
    n_expand = 0
    for _ in range(400):
        e = aug.expand.sample(h, w, rng)
        if e is None:
            continue
        n_expand += 1
        assert w <= e.width <= 4 * w and h <= e.height <= 4 * h
        assert 0 <= e.left and e.left + w <= e.width and 0 <= e.top and e.top + h <= e.height
    assert 150 < n_expand < 250


# --- photometric formulas ----------------------------------------------------------------------
def assert_saturated_round(actual, exact):
    """actual == clip(round(exact)), except that a value within float32 error of a .5 tie may
    round either way (OpenCV computes in float32)."""
    expected = np.clip(np.rint(exact), 0, 255)
    diff = np.abs(actual.astype(np.float64) - expected)
    near_tie = np.abs(np.abs(exact - np.floor(exact)) - 0.5) < 1e-4
    assert diff.max() <= 1 and not (diff > 0)[~near_tie].any()


def test_brightness_contrast_saturate_once_like_the_float_pipeline(samples):
    img = samples[3][0]
    for b, c in [(25.0, 1.4), (-30.0, 0.6), (12.3, None), (None, 1.37), (-31.5, 1.5)]:
        p = PhotometricParams(brightness=b, contrast=c, contrast_first=True)
        x = img.astype(np.float64)
        if b is not None:
            x = x + b
        if c is not None:
            x = x * c  # no clipping in between, as ssd.pytorch's float values
        assert_saturated_round(PhotometricDistort.apply(img, p), x)
    # contrast after the HSV part: brightness, HSV, then contrast, each saturating
    p = PhotometricParams(brightness=10.0, contrast=1.3, contrast_first=False, saturation=0.7)
    x = np.clip(np.rint(img.astype(np.float64) + 10), 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV_FULL)
    hsv[:, :, 1] = np.clip(np.rint(hsv[:, :, 1] * 0.7), 0, 255).astype(np.uint8)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(np.float64)
    assert_saturated_round(PhotometricDistort.apply(img, p), x * 1.3)
    # hue alone: a wrapping shift of OpenCV's full-range hue (256 units per turn)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(int) - 13) % 256
    np.testing.assert_array_equal(PhotometricDistort.apply(img, PhotometricParams(hue=-18.0)),
                                  cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL))


def _float_hsv(bgr):
    return cv2.cvtColor(bgr.astype(np.float32) / 255, cv2.COLOR_BGR2HSV)


def test_hue_and_saturation_act_in_degrees_and_factors():
    rng = np.random.default_rng(0)
    # saturated colours, away from gray where hue is undefined
    img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    img[:, :, rng.integers(0, 3)] //= 4
    src = _float_hsv(img)
    colourful = (src[:, :, 1] > 0.5) & (src[:, :, 2] > 0.4)
    for deg in (18.0, -12.0):
        out = _float_hsv(PhotometricDistort.apply(img, PhotometricParams(hue=deg)))
        d = (out[:, :, 0] - src[:, :, 0] + 180) % 360 - 180
        assert abs(np.median(d[colourful]) - deg) < 2.0
    out = _float_hsv(PhotometricDistort.apply(img, PhotometricParams(saturation=0.5)))
    ratio = out[:, :, 1][colourful] / src[:, :, 1][colourful]
    assert abs(np.median(ratio) - 0.5) < 0.03
    same = PhotometricDistort.apply(img, PhotometricParams())
    assert same is img  # nothing drawn: no copy, input untouched
    swapped = PhotometricDistort.apply(img, PhotometricParams(channel_order=(1, 2, 0)))
    np.testing.assert_array_equal(swapped, img[:, :, [1, 2, 0]])


def test_photometric_draw_frequencies_and_ranges():
    pd = PhotometricDistort()
    rng = np.random.default_rng(5)
    draws = [pd.sample(rng) for _ in range(4000)]

    def freq(field):
        return np.mean([getattr(d, field) is not None for d in draws])

    for field in ("brightness", "contrast", "saturation", "hue"):
        assert abs(freq(field) - 0.5) < 0.04, field
    # channel swap half the time, one of 6 orders (identity included) -> 5/12 visible
    assert abs(freq("channel_order") - 5 / 12) < 0.04
    assert {d.channel_order for d in draws} - {None} == {
        (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}
    assert abs(np.mean([d.contrast_first for d in draws]) - 0.5) < 0.04
    vals = lambda f: np.array([getattr(d, f) for d in draws if getattr(d, f) is not None])  # noqa: E731
    assert vals("brightness").min() >= -32 and vals("brightness").max() <= 32
    assert vals("hue").min() >= -18 and vals("hue").max() <= 18
    for f in ("contrast", "saturation"):
        assert vals(f).min() >= 0.5 and vals(f).max() <= 1.5


# --- randomness -------------------------------------------------------------------------------
def _draws(aug, samples, n=12):
    return [aug(*samples[k % len(samples)]) for k in range(n)]


def _same(a, b):
    return all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))


def test_seeded_streams_are_reproducible_and_private(samples):
    np_state, py_state = np.random.get_state(), random.getstate()
    a = _draws(SSDAugmentation(300, seed=1), samples)
    b = _draws(SSDAugmentation(300, seed=1), samples)
    c = _draws(SSDAugmentation(300, seed=2), samples)
    assert _same(a, b) and not _same(a, c)
    # the global NumPy / Python random states were not used
    assert random.getstate() == py_state
    np.testing.assert_array_equal(np.random.get_state()[1], np_state[1])
    # without a seed the main process follows torch.manual_seed
    torch.manual_seed(3)
    d = _draws(SSDAugmentation(300), samples)
    torch.manual_seed(3)
    e = _draws(SSDAugmentation(300), samples)
    assert _same(d, e)
    # an explicit generator wins
    aug = SSDAugmentation(300, seed=9)
    f = [aug(*samples[0], rng=np.random.default_rng(4)) for _ in range(2)]
    assert _same(f[:1], f[1:])


def test_state_dict_resumes_the_stream(samples):
    aug = SSDAugmentation(300, seed=5)
    _draws(aug, samples, 3)
    state = aug.state_dict()
    after = _draws(aug, samples, 4)
    other = SSDAugmentation(300)
    other.load_state_dict(state)
    assert other.seed == 5 and _same(_draws(other, samples, 4), after)
    aug.reseed(5)
    assert _same(_draws(aug, samples, 3), _draws(SSDAugmentation(300, seed=5), samples, 3))
