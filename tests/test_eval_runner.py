"""VOC scoring of whole datasets, batched inference plumbing and the training validation hook."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd.evaluation import run_validation
from ssd.evaluation.inference import detection_mode, split_detections
from ssd.evaluation.runner import evaluate_voc, voc_set
from ssd.evaluation.voc import det_file_name

VOC_ROOT = Path(__file__).resolve().parents[1] / "data" / "samples" / "voc_mini" / "VOCdevkit"


@pytest.fixture(scope="module")
def voc_test():
    from ssd.data import BaseTransform, VOCDetection

    return VOCDetection(VOC_ROOT, [("2007", "test")], BaseTransform(300), keep_difficult=True)


def _gt_all_boxes(ds):
    """Every annotated object (difficult ones too) as a detection, in all_boxes layout."""
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(len(ds))]
                 for _ in range(ds.num_classes)]
    for i in range(len(ds)):
        _, rows = ds.pull_anno(i)  # pixels minus 1 (the network's 0-based frame)
        for x1, y1, x2, y2, label in rows:
            c = int(label) + 1
            row = np.array([[x1, y1, x2, y2, 0.5 + 0.01 * i]], np.float32)
            all_boxes[c][i] = np.vstack([all_boxes[c][i], row])
    return all_boxes


def test_voc_ground_truth_fed_back_scores_one(voc_test, tmp_path):
    vs = voc_set(voc_test)
    assert vs.set_name == "test" and len(vs.image_ids) == 30 and vs.years == ["2007"]
    all_boxes = _gt_all_boxes(voc_test)
    for metric in (True, False):
        out = evaluate_voc(vs, all_boxes=all_boxes, results_dir=tmp_path / "r",
                           cachedir=tmp_path / "cache", use_07_metric=metric)
        assert set(out["ap"]) == set(voc_test.classes)  # all 20 classes are in the test split
        assert all(v == pytest.approx(1.0) for v in out["ap"].values()), out["ap"]
        assert out["mAP"] == pytest.approx(1.0)
    # The files hold 1-based corners: the XML's numbers (27 45 266 375 for this bird).
    line = (tmp_path / "r" / det_file_name("test", "bird")).read_text().splitlines()[0]
    assert line.split()[0] == "2007_000068"
    assert line.split()[2:] == ["27.0", "45.0", "266.0", "375.0"]
    in_memory = evaluate_voc(vs, all_boxes=all_boxes, cachedir=tmp_path / "cache")
    assert all(v == pytest.approx(1.0) for v in in_memory["ap"].values())
    assert sum(out["num_gt"].values()) == 77 - 11  # the split's objects minus the difficult


def test_voc_shifted_boxes_lose_ap(voc_test):
    all_boxes = _gt_all_boxes(voc_test)
    # Moving every box right by 60% of its width leaves IoU < 0.5: nothing is found.
    moved = [[d + np.array([0.6 * (d[:, 2] - d[:, 0]).max(initial=0), 0, 0.6 * (
        d[:, 2] - d[:, 0]).max(initial=0), 0, 0], np.float32) for d in per] for per in all_boxes]
    out = evaluate_voc(voc_set(voc_test), all_boxes=moved)
    assert out["mAP"] < 0.2


def test_split_detections_scales_each_image_to_its_size():
    dets = torch.zeros(2, 3, 4, 5)
    dets[0, 1, 0] = torch.tensor([0.9, 0.1, 0.2, 0.5, 0.6])
    dets[0, 1, 1] = torch.tensor([0.3, 0.0, 0.0, 1.0, 1.0])
    dets[1, 2, 0] = torch.tensor([0.7, 0.5, 0.5, 1.0, 1.0])
    sizes = torch.tensor([[100, 200], [50, 80]])  # (height, width)
    out = split_detections(dets, sizes)
    np.testing.assert_allclose(out[0][1], [[20, 20, 100, 60, 0.9], [0, 0, 200, 100, 0.3]],
                               rtol=1e-6)
    assert out[0][2].shape == (0, 5) and out[1][1].shape == (0, 5) and out[0][0].shape == (0, 5)
    np.testing.assert_allclose(out[1][2], [[40, 25, 80, 50, 0.7]], rtol=1e-6)


@pytest.fixture(scope="module")
def train_model():
    from ssd.model import build_ssd

    torch.manual_seed(0)
    return build_ssd("train", 300, 21)


def test_detection_mode_restores_everything(train_model):
    model = train_model.train()
    with pytest.raises(RuntimeError, match="boom"):
        with detection_mode(model, conf_thresh=0.2, top_k=7) as net:
            assert net.phase == "test" and not net.training and net.top_k == 7
            raise RuntimeError("boom")
    assert model.phase == "train" and model.training and model.top_k == 200
    assert model.conf_thresh == pytest.approx(0.01)


def test_run_validation_scores_and_restores(train_model, voc_test, monkeypatch):
    monkeypatch.setattr(voc_test, "ids", voc_test.ids[:3])
    model = train_model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = run_validation(model, dataset=voc_test, batch_size=2, top_k=20)
    assert set(out) >= {"mAP", "ap", "metric", "num_images", "seconds", "images_per_s"}
    assert out["num_images"] == 3 and out["metric"] == "VOC07 11-point AP"
    assert set(out["ap"]) == set(voc_test.classes)
    # Random weights find nothing; classes absent from these 3 images have no defined AP.
    defined = [v for v in out["ap"].values() if not math.isnan(v)]
    assert defined and all(0.0 <= v <= 1.0 for v in defined)
    assert 0.0 <= out["mAP"] <= 1.0
    assert model.phase == "train" and model.training and model.top_k == 200
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_results_json_is_strict_and_tables_mark_undefined(tmp_path):
    import json

    from ssd.evaluation.results import format_ap_table, write_results_json

    path = write_results_json({"mAP": np.float64(0.5), "ap": {"cat": math.nan, "dog": 0.25},
                               "n": np.int64(3), "ok": np.bool_(True)}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"mAP": 0.5, "ap": {"cat": None, "dog": 0.25},
                                            "n": 3, "ok": True}
    table = format_ap_table("title", {"cat": math.nan, "dog": 0.25}, 0.25, {"GT": {"dog": 4}})
    lines = table.splitlines()
    assert lines[0] == "title" and "n/a" in lines[3] and "0.2500" in lines[4]
    assert lines[-1].split() == ["mAP", "0.2500"]
