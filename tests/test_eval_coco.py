"""COCO evaluation: results conversion, COCOeval scoring, ground truth fed back scores 1.0."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssd.evaluation.coco import coco_detections, coco_evaluate, read_coco_results
from ssd.evaluation.runner import coco_label_to_cat_id, evaluate_coco

COCO_ROOT = Path(__file__).resolve().parents[1] / "data" / "samples" / "coco_mini"


@pytest.fixture(scope="module")
def coco_val():
    from ssd.data import COCODetection

    return COCODetection(COCO_ROOT, "val2017")


def _gt_all_boxes(ds):
    """The dataset's own (non-crowd) boxes as detections: all_boxes[c][i] in pixels."""
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(len(ds))]
                 for _ in range(ds.num_classes)]
    for i in range(len(ds)):
        w, h = ds.image_size(i)
        for x1, y1, x2, y2, label in ds.target_transform(ds.pull_anno(i), w, h):
            c = int(label) + 1
            row = np.array([[x1 * w, y1 * h, x2 * w, y2 * h, 1.0]], np.float32)
            all_boxes[c][i] = np.vstack([all_boxes[c][i], row])
    return all_boxes


def test_coco_detections_hand_case():
    empty = np.zeros((0, 5))
    all_boxes = [[empty, empty],
                 [np.array([[10.0, 20.0, 40.0, 60.0, 0.9]]), empty],
                 [empty, np.array([[0.5, 1.0, 2.5, 4.0, 0.25], [1, 1, 2, 2, 0.125]])]]
    dets = coco_detections(all_boxes, [42, 7], {0: 18, 1: 90})
    assert dets == [
        {"image_id": 42, "category_id": 18, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9},
        {"image_id": 7, "category_id": 90, "bbox": [0.5, 1.0, 2.0, 3.0], "score": 0.25},
        {"image_id": 7, "category_id": 90, "bbox": [1.0, 1.0, 1.0, 1.0], "score": 0.125},
    ]


def test_label_map_uses_original_category_ids(coco_val):
    ids = coco_label_to_cat_id(coco_val)
    assert len(ids) == 80 and ids[0] == 1 and ids[-1] == 90 and 12 not in ids


def test_ground_truth_fed_back_scores_one(coco_val, tmp_path):
    all_boxes = _gt_all_boxes(coco_val)
    out = evaluate_coco(coco_val, all_boxes=all_boxes, results_file=tmp_path / "r.json",
                        verbose=False)
    assert out["stats"]["AP"] == pytest.approx(1.0)
    assert out["stats"]["AP50"] == pytest.approx(1.0)
    present = {k: v for k, v in out["ap"].items() if not math.isnan(v)}
    assert len(present) >= 30 and all(v == pytest.approx(1.0) for v in present.values())
    # The file written is what COCOeval scored: reading it back gives the same numbers.
    again = coco_evaluate(coco_val.coco, tmp_path / "r.json", coco_val.ids, verbose=False)
    assert again["stats"] == out["stats"]
    # Shifting every box by half its size drops AP well below 1.
    shifted = [[d + np.array([(d[:, 2] - d[:, 0]).mean() / 2 if len(d) else 0, 0, 0, 0, 0])
                if len(d) else d for d in per_img] for per_img in all_boxes]
    worse = evaluate_coco(coco_val, all_boxes=shifted, verbose=False)
    assert worse["stats"]["AP"] < 0.9


def test_no_detections_gives_zeros_not_a_crash(coco_val):
    empty = [[np.zeros((0, 5))] * len(coco_val) for _ in range(coco_val.num_classes)]
    out = evaluate_coco(coco_val, all_boxes=empty, verbose=False)
    assert out["num_detections"] == 0 and "no detections" in out["note"]
    assert all(v == 0.0 for v in out["stats"].values())
    assert out["ap"]["person"] == 0.0 and out["ap"]["toothbrush"] == 0.0
    assert math.isnan(out["ap"]["hair drier"])  # not in the sample's 20 images


def test_bad_results_are_reported(coco_val, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image_id": 1}))
    with pytest.raises(ValueError, match="bad.json"):
        read_coco_results(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_coco_results(tmp_path / "missing.json")
    stray = [{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="123456789"):
        coco_evaluate(coco_val.coco, stray, verbose=False)
