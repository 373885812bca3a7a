"""VOC AP: hand-worked cases and a comparison with a plain loop written from the official rule."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from ssd.evaluation import voc_ap, voc_eval
from ssd.evaluation.voc import (
    ClassDetections,
    load_annotations,
    mean_ap,
    parse_rec,
    read_det_file,
    voc_eval_class,
    write_det_file,
)


def _xml(objects, width=100, height=80) -> str:
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height>"
             "<depth>3</depth></size>"]
    for name, box, difficult in objects:
        x1, y1, x2, y2 = box
        parts.append(
            f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


def _write_set(root: Path, annotations: dict, set_name: str = "test") -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for image_id, objects in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(objects))
    setfile = root / f"{set_name}.txt"
    setfile.write_text("".join(f"{i}\n" for i in annotations))
    return setfile


def _write_dets(path: Path, rows) -> None:
    path.write_text("".join(f"{i} {s} {x1} {y1} {x2} {y2}\n" for i, s, (x1, y1, x2, y2) in rows))


DOG_A = (10, 10, 50, 40)
DOG_A_DIFFICULT = (60, 10, 90, 70)
DOG_B = (5, 5, 30, 30)
CAT_A = (20, 20, 70, 60)


@pytest.fixture()
def toy(tmp_path):
    """Two images: 'a' with a dog, a difficult dog and a cat; 'b' with a dog."""
    setfile = _write_set(tmp_path, {
        "a": [("dog", DOG_A, 0), ("dog", DOG_A_DIFFICULT, 1), ("cat", CAT_A, 0)],
        "b": [("dog", DOG_B, 0)],
    })
    _write_dets(tmp_path / "det_dog.txt", [
        ("b", 0.5, DOG_B),            # tp (second true positive)
        ("a", 0.9, DOG_A),            # tp
        ("a", 0.8, DOG_A),            # duplicate -> fp
        ("a", 0.7, DOG_A_DIFFICULT),  # on a difficult object -> ignored
        ("b", 0.6, (60, 50, 90, 75)),  # nowhere -> fp
    ])
    (tmp_path / "det_cat.txt").write_text("")
    return tmp_path, setfile


# --- voc_ap ---------------------------------------------------------------------------------

def test_voc_ap_11_point_hand_worked():
    # Best precision is 1.0 for t in 0..0.5 (6 thresholds) and 0.5 for t in 0.6..1 (5).
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]), True) == pytest.approx(8.5 / 11)


def test_voc_ap_11_point_keeps_arange_thresholds():
    # np.arange gives t = 0.30000000000000004 > 0.3, so recall 0.3 reaches only t = 0, 0.1, 0.2:
    # that is what the reference Python devkit computes.
    assert voc_ap(np.array([0.3]), np.array([1.0]), True) == pytest.approx(3 / 11)


def test_voc_ap_area_hand_worked():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]), False) == pytest.approx(0.75)
    # The envelope lifts the 0.5 at recall 0.5 to the 0.6 that follows it:
    # 0.25 * 1 + 0.25 * 0.6 + 0.25 * 0.6 + 0.25 * 0.5.
    rec = np.array([0.25, 0.5, 0.75, 1.0])
    prec = np.array([1.0, 0.5, 0.6, 0.5])
    assert voc_ap(rec, prec, False) == pytest.approx(0.25 + 0.15 + 0.15 + 0.125)


def test_voc_ap_empty_curve_is_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
        assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


# --- voc_eval -------------------------------------------------------------------------------

def test_voc_eval_difficult_duplicates_and_misses(toy):
    root, setfile = toy
    anno = str(root / "Annotations" / "{:s}.xml")
    rec, prec, ap = voc_eval(str(root / "det_{:s}.txt"), anno, setfile, "dog", use_07_metric=True)
    # Sorted by score: tp(0.9) fp(0.8 duplicate) [0.7 difficult: skipped] fp(0.6) tp(0.5); npos=2.
    np.testing.assert_allclose(rec, [0.5, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 0.5, 1 / 3, 0.5])
    assert ap == pytest.approx(8.5 / 11)
    _, _, ap_area = voc_eval(str(root / "det_{:s}.txt"), anno, setfile, "dog",
                             use_07_metric=False)
    assert ap_area == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)


def test_voc_eval_class_without_detections_is_zero(toy):
    root, setfile = toy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for metric in (True, False):
            rec, prec, ap = voc_eval(str(root / "det_{:s}.txt"), str(root / "Annotations/{:s}.xml"),
                                     setfile, "cat", use_07_metric=metric)
            assert rec.size == 0 and prec.size == 0 and ap == 0.0


def test_voc_eval_class_without_ground_truth_is_nan(toy):
    root, setfile = toy
    _write_dets(root / "det_bird.txt", [("a", 0.9, DOG_A)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rec, prec, ap = voc_eval(str(root / "det_{:s}.txt"), str(root / "Annotations/{:s}.xml"),
                                 setfile, "bird")
    assert math.isnan(ap) and np.isnan(rec).all() and prec.tolist() == [0.0]
    assert mean_ap([0.5, math.nan, 1.0]) == pytest.approx(0.75)


def test_voc_eval_percent_s_templates_match_format_templates(toy):
    root, setfile = toy
    a = voc_eval(str(root / "det_{:s}.txt"), str(root / "Annotations/{:s}.xml"), setfile, "dog")
    b = voc_eval(str(root / "det_%s.txt"), str(root / "Annotations/%s.xml"), setfile, "dog")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("y2, hit", [(5.5, True), (5.0, False)])
def test_voc_eval_iou_uses_plus_one_and_strict_threshold(tmp_path, y2, hit):
    # GT 1..10 x 1..10 is 10 x 10 pixels. A box 1..10 x 1..5.5 covers 10 x 5.5 = 55 of them:
    # IoU 0.55 with the +1 (a hit), 0.5 without it. Rows 1..5 cover exactly half: IoU 0.5 is not
    # above 0.5, so it is a false positive.
    setfile = _write_set(tmp_path, {"img": [("dog", (1, 1, 10, 10), 0)]})
    _write_dets(tmp_path / "det_dog.txt", [("img", 0.9, (1, 1, 10, y2))])
    rec, prec, ap = voc_eval(str(tmp_path / "det_{}.txt"), str(tmp_path / "Annotations/{}.xml"),
                             setfile, "dog")
    assert rec.tolist() == [1.0 if hit else 0.0]
    assert ap == pytest.approx(1.0 if hit else 0.0)


def test_voc_eval_cache_is_keyed_to_the_image_set(tmp_path):
    ann = {"a": [("dog", DOG_A, 0)], "b": [("dog", DOG_B, 0)]}
    _write_set(tmp_path, ann)
    set_a = tmp_path / "set_a.txt"
    set_b = tmp_path / "set_b.txt"
    set_a.write_text("a\n")
    set_b.write_text("b\n")
    _write_dets(tmp_path / "det_dog.txt", [("a", 0.9, DOG_A)])
    cache = tmp_path / "cache"
    det, anno = str(tmp_path / "det_{}.txt"), str(tmp_path / "Annotations/{}.xml")
    assert voc_eval(det, anno, set_a, "dog", cachedir=cache)[2] == pytest.approx(1.0)
    # With a cache shared across sets, image 'a' would be unknown to set_b's evaluation (or set_a's
    # annotations reused): it must fail clearly instead, and with set_b's own detections score 1.
    with pytest.raises(ValueError, match="'a' is not in the evaluated image set"):
        voc_eval(det, anno, set_b, "dog", cachedir=cache)
    _write_dets(tmp_path / "det_dog.txt", [("b", 0.9, DOG_B)])
    assert voc_eval(det, anno, set_b, "dog", cachedir=cache)[2] == pytest.approx(1.0)
    assert len(list(cache.glob("*.pkl"))) == 2
    # Same file name, new contents: a new cache entry, not the stale one.
    set_a.write_text("a\nb\n")
    _write_dets(tmp_path / "det_dog.txt", [("a", 0.9, DOG_A), ("b", 0.8, DOG_B)])
    rec, _, ap = voc_eval(det, anno, set_a, "dog", cachedir=cache)
    assert rec.tolist() == [0.5, 1.0] and ap == pytest.approx(1.0)
    assert len(list(cache.glob("*.pkl"))) == 3


def test_cache_is_used_when_present_and_dropped_after_edits(tmp_path, monkeypatch):
    import os

    import ssd.evaluation.voc as voc

    setfile = _write_set(tmp_path, {"a": [("dog", DOG_A, 0)]})
    anno = str(tmp_path / "Annotations/{}.xml")
    first = load_annotations(anno, ["a"], tmp_path / "c", setfile)

    def no_parsing(path):
        raise AssertionError(f"{path} parsed although it is cached")

    with monkeypatch.context() as m:
        m.setattr(voc, "parse_rec", no_parsing)
        assert load_annotations(anno, ["a"], tmp_path / "c", setfile) == first
    # An edited annotation (new modification time) is parsed again.
    xml = tmp_path / "Annotations/a.xml"
    xml.write_text(_xml([("cat", CAT_A, 0)]))
    st = os.stat(xml)
    os.utime(xml, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load_annotations(anno, ["a"], tmp_path / "c", setfile)["a"][0]["name"] == "cat"


def test_bad_inputs_name_the_file(tmp_path, toy):
    root, setfile = toy
    (root / "det_bad.txt").write_text("a 0.5 1 2 3\n")
    with pytest.raises(ValueError, match=r"det_bad.txt:1"):
        read_det_file(root / "det_bad.txt")
    with pytest.raises(FileNotFoundError, match="det_horse.txt"):
        voc_eval(str(root / "det_{}.txt"), str(root / "Annotations/{}.xml"), setfile, "horse")
    with pytest.raises(FileNotFoundError, match="zzz.xml"):
        load_annotations(str(root / "Annotations/{}.xml"), ["zzz"], root / "cache", setfile)
    (root / "Annotations" / "broken.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match="broken.xml"):
        parse_rec(root / "Annotations" / "broken.xml")


def test_parse_rec_reads_boxes_unchanged(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text(_xml([("person", (1, 2, 300, 200), 1), ("dog", ("3.5", 4, 5, 6), 0)]))
    objs = parse_rec(path)
    assert objs[0]["bbox"] == [1, 2, 300, 200] and objs[0]["difficult"] == 1
    assert objs[1]["bbox"] == [3.5, 4, 5, 6] and objs[1]["name"] == "dog"


def test_write_det_file_adds_one_and_rounds(tmp_path):
    path = write_det_file(tmp_path / "d.txt", ["x", "y"],
                          [np.array([[0.0, 9.04, 99.96, 50.0, 0.98765]]), np.zeros((0, 5))])
    assert path.read_text() == "x 0.988 1.0 10.0 101.0 51.0\n"


# --- against a plain loop -------------------------------------------------------------------

def _reference_voc_eval(recs, imagenames, classname, image_ids, confidence, boxes, ovthresh,
                        use_07_metric):
    """The official rule, one detection at a time (written from REFERENCE.md section 7)."""
    class_recs = {}
    npos = 0
    for name in imagenames:
        objs = [o for o in recs[name] if o["name"] == classname]
        class_recs[name] = {
            "bbox": np.array([o["bbox"] for o in objs], dtype=float).reshape(-1, 4),
            "difficult": np.array([bool(o["difficult"]) for o in objs], dtype=bool),
            "det": [False] * len(objs),
        }
        npos += int((~class_recs[name]["difficult"]).sum())
    order = np.argsort(-confidence)
    boxes = boxes[order]
    ids = [image_ids[k] for k in order]
    tp = np.zeros(len(ids))
    fp = np.zeros(len(ids))
    for d, name in enumerate(ids):
        r = class_recs[name]
        bb = boxes[d].astype(float)
        ovmax = -np.inf
        gt = r["bbox"]
        if gt.size > 0:
            iw = np.maximum(np.minimum(gt[:, 2], bb[2]) - np.maximum(gt[:, 0], bb[0]) + 1.0, 0.0)
            ih = np.maximum(np.minimum(gt[:, 3], bb[3]) - np.maximum(gt[:, 1], bb[1]) + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d] = 1.0
                    r["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return rec, prec, ap


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use_07", [True, False])
def test_voc_eval_class_matches_plain_loop_bitwise(seed, use_07):
    rng = np.random.default_rng(seed)
    names = ["cat", "dog"]
    imagenames = [f"im{i}" for i in range(12)]
    recs = {}
    for name in imagenames:
        objs = []
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.integers(1, 200, size=2)
            w, h = rng.integers(5, 120, size=2)
            objs.append({"name": names[rng.integers(0, 2)], "difficult": int(rng.random() < 0.2),
                         "bbox": [int(x1), int(y1), int(x1 + w), int(y1 + h)]})
        recs[name] = objs
    n = 300
    image_ids = [imagenames[k] for k in rng.integers(0, len(imagenames), size=n)]
    # Detections near the ground truth (jittered, so some hit and some duplicate), coarse scores
    # so that ties occur.
    boxes = np.zeros((n, 4))
    for k, name in enumerate(image_ids):
        gts = [o["bbox"] for o in recs[name]] or [[50, 50, 120, 100]]
        boxes[k] = np.round(np.array(gts[rng.integers(0, len(gts))]) + rng.normal(0, 6, 4), 1)
    confidence = np.round(rng.random(n), 1)
    for cls in names:
        dets = ClassDetections(image_ids, confidence, boxes)
        rec, prec, ap = voc_eval_class(recs, imagenames, cls, dets, 0.5, use_07)
        ref = _reference_voc_eval(recs, imagenames, cls, image_ids, confidence, boxes, 0.5,
                                  use_07)
        np.testing.assert_array_equal(rec, ref[0])
        np.testing.assert_array_equal(prec, ref[1])
        assert ap == ref[2]
        assert 0.0 < ap < 1.0
