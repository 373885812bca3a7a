"""Detect vs a straightforward per-image, per-class greedy NMS reference (ssd.pytorch rules),
and vs torchvision's SSD post-processing rules."""

import math

import pytest
import torch

from ssd.box_utils import decode
from ssd.detection import Detect, detect

VAR = (0.1, 0.2)


def _iou_one(box, others):
    xx1 = torch.maximum(others[:, 0], box[0])
    yy1 = torch.maximum(others[:, 1], box[1])
    xx2 = torch.minimum(others[:, 2], box[2])
    yy2 = torch.minimum(others[:, 3], box[3])
    inter = (xx2 - xx1).clamp(min=0) * (yy2 - yy1).clamp(min=0)
    area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    area0 = (box[2] - box[0]) * (box[3] - box[1])
    return inter / (area + area0 - inter)


def reference_detect(loc, conf, priors, num_classes, bkg_label=0, top_k=200,
                     conf_thresh=0.01, nms_thresh=0.45, max_per_image=None):
    """One image, one class at a time: threshold, top-k, greedy NMS (keep IoU <= thresh)."""
    batch, n_priors = loc.shape[:2]
    out = torch.zeros(batch, num_classes, top_k, 5)
    for b in range(batch):
        boxes = decode(loc[b], priors[:n_priors], VAR)
        for c in range(num_classes):
            if c == bkg_label:
                continue
            scores = conf[b, :, c]
            cand = [i for i in range(n_priors) if scores[i] > conf_thresh]
            cand.sort(key=lambda i: -float(scores[i]))
            cand = cand[:top_k]
            kept = []
            while cand:
                i = cand.pop(0)
                kept.append(i)
                if cand:
                    ious = _iou_one(boxes[i], boxes[cand])
                    cand = [j for j, v in zip(cand, ious.tolist()) if v <= nms_thresh]
            for r, i in enumerate(kept):
                out[b, c, r, 0] = scores[i]
                out[b, c, r, 1:] = boxes[i]
        if max_per_image is not None:
            flat = out[b, :, :, 0].flatten()
            order = sorted(range(flat.numel()), key=lambda i: -float(flat[i]))
            for i in order[max_per_image:]:
                out[b].view(-1, 5)[i] = 0
    return out


def _inputs(batch=2, n_priors=60, num_classes=4, peak=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    cxcy = torch.rand(n_priors, 2, generator=g)
    wh = 0.1 + 0.3 * torch.rand(n_priors, 2, generator=g)
    priors = torch.cat([cxcy, wh], 1)
    loc = 0.5 * torch.randn(batch, n_priors, 4, generator=g)
    conf = (peak * torch.randn(batch, n_priors, num_classes, generator=g)).softmax(-1)
    return loc, conf, priors


@pytest.mark.parametrize("seed,peak,top_k", [(0, 1.0, 200), (1, 3.0, 200), (2, 1.0, 7),
                                             (3, 2.0, 15)])
def test_matches_reference(seed, peak, top_k):
    loc, conf, priors = _inputs(batch=3, n_priors=80, num_classes=5, peak=peak, seed=seed)
    got = detect(loc, conf, priors, 5, top_k=top_k, conf_thresh=0.05, nms_thresh=0.45)
    want = reference_detect(loc, conf, priors, 5, top_k=top_k, conf_thresh=0.05)
    assert got.shape == (3, 5, top_k, 5)
    assert (got[:, 0] == 0).all()
    n_kept = int((got[..., 0] > 0).sum())
    n_cand = int((conf[:, :, 1:] > 0.05).sum(1).clamp(max=top_k).sum())
    assert 0 < n_kept < n_cand  # NMS really suppressed something
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_top_k_smaller_than_candidates_and_rows_sorted():
    loc, conf, priors = _inputs(batch=2, n_priors=100, num_classes=3, seed=5)
    got = detect(loc, conf, priors, 3, top_k=5, conf_thresh=0.0, nms_thresh=0.99)
    # with a lax NMS nearly all of the 5 candidates survive: the output is exactly the top 5
    torch.testing.assert_close(got, reference_detect(loc, conf, priors, 3, top_k=5,
                                                     conf_thresh=0.0, nms_thresh=0.99))
    s = got[..., 0]
    assert (s[:, 1:, :-1] >= s[:, 1:, 1:]).all()
    top5 = conf[0, :, 1].topk(5).values
    assert torch.equal(got[0, 1, :, 0], top5)


def test_empty_class_and_all_below_threshold():
    loc, conf, priors = _inputs(batch=2, n_priors=50, num_classes=4, seed=7)
    conf = conf.clone()
    conf[:, :, 2] = 0.001  # class 2 never passes the threshold
    got = detect(loc, conf, priors, 4, conf_thresh=0.01)
    assert (got[:, 2] == 0).all()
    assert (got[:, 1, 0, 0] > 0).all()
    torch.testing.assert_close(got, reference_detect(loc, conf, priors, 4), rtol=0, atol=1e-6)
    none = detect(loc, torch.full_like(conf, 0.005), priors, 4, conf_thresh=0.01)
    assert none.shape == (2, 4, 200, 5)
    assert (none == 0).all()


def test_max_per_image():
    loc, conf, priors = _inputs(batch=2, n_priors=70, num_classes=4, seed=11)
    full = detect(loc, conf, priors, 4, conf_thresh=0.05)
    capped = detect(loc, conf, priors, 4, conf_thresh=0.05, max_per_image=10)
    assert ((capped[..., 0] > 0).sum(dim=(1, 2)) == 10).all()
    torch.testing.assert_close(
        capped, reference_detect(loc, conf, priors, 4, conf_thresh=0.05, max_per_image=10),
        rtol=0, atol=1e-6)
    # the cap only removes rows: surviving rows are unchanged and are the best ones
    kept = capped[..., 0] > 0
    assert torch.equal(capped[kept], full[kept])
    assert capped[..., 0].flatten(1).min(1).values.le(full[..., 0].flatten(1).max(1).values).all()


def test_bkg_label_other_than_zero():
    loc, conf, priors = _inputs(batch=1, n_priors=40, num_classes=3, seed=13)
    got = detect(loc, conf, priors, 3, bkg_label=2, conf_thresh=0.05)
    assert (got[:, 2] == 0).all() and (got[:, 0, 0, 0] > 0).all()
    torch.testing.assert_close(
        got, reference_detect(loc, conf, priors, 3, bkg_label=2, conf_thresh=0.05),
        rtol=0, atol=1e-6)
    no_bkg = detect(loc, conf, priors, 3, bkg_label=-1, conf_thresh=0.05)
    assert (no_bkg[:, 0, 0, 0] > 0).all()
    torch.testing.assert_close(no_bkg[:, :2], got[:, :2])


def test_detect_apply_equals_detect_and_is_not_differentiable():
    loc, conf, priors = _inputs(batch=2, n_priors=60, num_classes=4, seed=17)
    loc.requires_grad_(True)
    out = Detect.apply(4, 0, 20, 0.02, 0.45, loc, conf, priors)
    assert not out.requires_grad
    assert out.shape == (2, 4, 20, 5)
    assert torch.equal(out, detect(loc.detach(), conf, priors, 4, 0, 20, 0.02, 0.45))


def test_half_precision_inputs_give_float32():
    loc, conf, priors = _inputs(batch=1, n_priors=30, num_classes=3, seed=19)
    out = detect(loc.half(), conf.half(), priors, 3, conf_thresh=0.05)
    assert out.dtype == torch.float32
    ref = reference_detect(loc.half().float(), conf.half().float(), priors, 3, conf_thresh=0.05)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_bad_shapes_raise():
    loc, conf, priors = _inputs(batch=1, n_priors=30, num_classes=3)
    with pytest.raises(ValueError, match="conf"):
        detect(loc, conf, priors, 4)
    with pytest.raises(ValueError, match="priors"):
        detect(loc, conf, priors[:10], 3)


def test_far_negative_boxes_keep_classes_apart():
    # Boxes below -1 (untrained nets predict such offsets): an offset-per-class NMS trick that
    # assumes coordinates >= -1 would let class 1's box suppress class 2's, 0.01 away.
    priors = torch.tensor([[-1.495, -1.495, 1.01, 1.01], [0.5, 0.5, 0.2, 0.2]])
    loc = torch.zeros(1, 2, 4)
    conf = torch.tensor([[[0.1, 0.6, 0.3], [0.99, 0.005, 0.005]]])
    got = detect(loc, conf, priors, 3, conf_thresh=0.01)
    assert got[0, 1, 0, 0] == 0.6 and got[0, 2, 0, 0] == 0.3
    torch.testing.assert_close(got, reference_detect(loc, conf, priors, 3), rtol=0, atol=1e-6)


def test_runs_under_deterministic_algorithms():
    loc, conf, priors = _inputs(batch=2, n_priors=60, num_classes=4, seed=29)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        got = detect(loc, conf, priors, 4, conf_thresh=0.05, max_per_image=12)
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(got, detect(loc, conf, priors, 4, conf_thresh=0.05, max_per_image=12))


# ----------------------------------------------------------------------------- other rules

def _empty_box_inputs():
    """Three zero-width boxes (priors of width 0) of class 1 and one normal box."""
    priors = torch.tensor([[0.5, 0.5, 0.0, 0.2], [0.6, 0.5, 0.0, 0.2], [0.5, 0.5, 0.0, 0.2],
                           [0.3, 0.3, 0.1, 0.1]])
    loc = torch.zeros(1, 4, 4)
    conf = torch.tensor([[[0.1, 0.9, 0.0], [0.15, 0.85, 0.0], [0.2, 0.8, 0.0],
                          [0.3, 0.7, 0.0]]])
    return loc, conf, priors


def test_empty_boxes_follow_ssd_pytorch_by_default_and_torchvision_on_request():
    loc, conf, priors = _empty_box_inputs()
    got = detect(loc, conf, priors, 3)
    # ssd.pytorch: the IoU of two empty boxes is 0/0 = NaN, not <= 0.45: only the first stays
    torch.testing.assert_close(got, reference_detect(loc, conf, priors, 3), rtol=0, atol=0)
    assert got[0, 1, :, 0].tolist()[:3] == pytest.approx([0.9, 0.7, 0.0])
    kept = detect(loc, conf, priors, 3, keep_empty_boxes=True)
    assert kept[0, 1, :, 0].tolist()[:5] == pytest.approx([0.9, 0.85, 0.8, 0.7, 0.0])


def torchvision_reference(loc, conf, priors, num_classes, conf_thresh, nms_thresh,
                          candidates, cap, max_log_wh):
    """torchvision's SSD.postprocess_detections in [0, 1] units: per image, clip, per class
    threshold + top candidates, one batched NMS, the best ``cap`` overall."""
    from torchvision.ops import batched_nms

    out = []
    for b in range(loc.shape[0]):
        boxes = decode(loc[b], priors, VAR, max_log_wh).clamp(0, 1)
        rows = []
        for c in range(1, num_classes):
            s = conf[b, :, c]
            idx = (s > conf_thresh).nonzero().squeeze(1)
            s, order = s[idx].topk(min(candidates, len(idx)))
            rows += [(float(v), c, boxes[i]) for v, i in zip(s, idx[order])]
        scores = torch.tensor([r[0] for r in rows], dtype=torch.float64)
        labels = torch.tensor([r[1] for r in rows])
        bx = torch.stack([r[2] for r in rows]).double()
        keep = batched_nms(bx, scores, labels, nms_thresh)[:cap]
        out.append(sorted((round(float(scores[k]), 6), int(labels[k]),
                           tuple(round(v, 5) for v in bx[k].tolist())) for k in keep))
    return out


def _rows(dets):
    out = []
    for b in range(dets.shape[0]):
        nz = (dets[b, :, :, 0] > 0).nonzero().tolist()
        out.append(sorted((round(float(dets[b, c, r, 0]), 6), c,
                           tuple(round(v, 5) for v in dets[b, c, r, 1:].tolist()))
                          for c, r in nz))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_torchvision_rules_match_torchvisions_postprocessing(seed):
    loc, conf, priors = _inputs(batch=2, n_priors=120, num_classes=6, peak=2.0, seed=seed)
    loc[:, :10] += 8.0  # some boxes leave the image (clipped to empty ones) or grow large
    options = dict(candidates_per_class=15, max_per_image=25, clip_boxes=True,
                   keep_empty_boxes=True, max_log_wh=0.5)
    got = detect(loc, conf, priors, 6, top_k=10, conf_thresh=0.05, **options)
    want = torchvision_reference(loc, conf, priors, 6, 0.05, 0.45, 15, 25, 0.5)
    assert _rows(got) == want
    assert all(len(w) == 25 for w in want)  # the cap really bit
    assert ((got[..., 3] - got[..., 1]) == 0).any()  # and empty (clipped) boxes were kept
    assert got[..., 1:].min() >= 0 and got[..., 1:].max() <= 1


def test_candidates_per_class_and_log_wh_cap():
    loc, conf, priors = _inputs(batch=1, n_priors=80, num_classes=3, seed=7)
    few = detect(loc, conf, priors, 3, top_k=50, conf_thresh=0.01, candidates_per_class=5)
    assert int((few[0, 1, :, 0] > 0).sum()) <= 5 and few.shape == (1, 3, 50, 5)
    more = detect(loc, conf, priors, 3, top_k=4, conf_thresh=0.01, candidates_per_class=60)
    assert more.shape == (1, 3, 4, 5)  # rows per class stay top_k
    big = torch.zeros(1, 1, 4)
    big[0, 0, 2:] = 100.0
    prior = torch.tensor([[0.5, 0.5, 0.1, 0.1]])
    box = decode(big, prior, VAR, max_log_wh=1.0)[0, 0]
    assert float(box[2] - box[0]) == pytest.approx(0.1 * math.e, rel=1e-6)
    uncapped = decode(big, prior, VAR)[0, 0]
    assert float(uncapped[2] - uncapped[0]) == pytest.approx(0.1 * math.exp(20), rel=1e-5)


def test_detect_options_from_configs():
    from ssd.config import get_config
    from ssd.detection import DETECT_OPTIONS, detect_options

    assert detect_options(get_config("voc300")) == DETECT_OPTIONS
    tv = detect_options(get_config("tv_coco300"))
    assert tv["candidates_per_class"] == 400 and tv["max_per_image"] == 200
    assert tv["max_log_wh"] == pytest.approx(math.log(1000 / 16))
    with pytest.raises(ValueError, match="unknown detect option"):
        detect_options({"name": "x", "detect": {"topk": 3}})
    with pytest.raises(ValueError, match="clip_boxes must be true or false"):
        detect_options({"detect": {"clip_boxes": "yes"}})
