"""eval.py and test.py end to end on the bundled samples, with random-weight checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd.evaluation.cli import eval_main
from ssd.evaluation.cli import test_main as run_test_py

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"
COCO = REPO / "data" / "samples" / "coco_mini"
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    from ssd.model import build_ssd

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    torch.save(build_ssd("test", 300, 21).state_dict(), d / "ssd300_VOC_5.pth")
    # A training checkpoint (model under 'model', DataParallel prefix) for COCO's 81 classes.
    sd = {f"module.{k}": v for k, v in build_ssd("train", cfg="coco300").state_dict().items()}
    torch.save({"model": sd, "iteration": 5}, d / "coco_ckpt.pth")
    return d


@pytest.fixture(scope="module")
def voc_run(ckpt_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("voc_eval")
    cmd = [sys.executable, str(REPO / "eval.py"), "--trained_model",
           str(ckpt_dir / "ssd300_VOC_5.pth"), "--voc_root", str(VOC), "--save_folder", str(out),
           "--device", "cpu", "--batch_size", "4", "--num_workers", "1", "--max_images", "8",
           "--no_progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


@pytest.mark.slow
def test_eval_voc_end_to_end(voc_run):
    out, stdout = voc_run
    assert "VOC 2007 test: 8 images, VOC07 11-point AP" in stdout
    for name in VOC_CLASSES:
        assert f"\n{name} " in stdout
    assert "Mean AP" in stdout
    res = json.loads((out / "results.json").read_text())
    assert res["dataset"] == "VOC" and res["num_images"] == 8 and res["use_07_metric"] is True
    assert set(res["ap"]) == set(VOC_CLASSES)
    defined = [v for v in res["ap"].values() if v is not None]
    assert res["mAP"] == pytest.approx(float(np.mean(defined)))
    assert res["settings"]["top_k"] == 200 and res["settings"]["conf_thresh"] == 0.01
    assert res["timing"]["images_per_s"] > 0
    det = out / "results" / "det_test_person.txt"
    assert det.is_file() and len(res["files"]["det_files"]) == 20
    first = det.read_text().splitlines()[0].split()
    assert len(first) == 6 and len(first[1].split(".")[1]) == 3
    with open(out / "detections.pkl", "rb") as f:
        all_boxes = pickle.load(f)
    assert len(all_boxes) == 21 and all(len(c) == 8 for c in all_boxes)
    assert all_boxes[15][0].shape[1] == 5 and all_boxes[0][0].shape == (0, 5)
    # The results file holds every person row of the pickle, +1, to one decimal.
    n_person = sum(len(b) for b in all_boxes[15])
    assert len(det.read_text().splitlines()) == n_person == res["num_detections"]["person"]
    # The PR curves picture is written next to results.json (its content: test_eval_evaluators).
    assert res["files"]["pr_curves"] == str(out / "pr_curves.png")
    assert cv2.imread(str(out / "pr_curves.png")).shape == (700, 1100, 3)


@pytest.mark.slow
def test_eval_from_results_reproduces_the_numbers(voc_run, tmp_path, capsys):
    out, _ = voc_run
    first = json.loads((out / "results.json").read_text())
    # 8 images were evaluated; the folder's detections must be scored on the same 8.
    code = eval_main(["--from_results", str(out), "--voc_root", str(VOC), "--save_folder",
                      str(tmp_path), "--max_images", "8"])
    assert code == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["ap"] == first["ap"] and again["mAP"] == first["mAP"]
    assert again["settings"]["from_results"] == str(out)
    assert "Mean AP" in capsys.readouterr().out
    # Area AP from the same files is a different rule: it is recorded as such.
    eval_main(["--from_results", str(out / "results"), "--voc_root", str(VOC), "--save_folder",
               str(tmp_path), "--max_images", "8", "--use_07_metric", "false"])
    assert json.loads((tmp_path / "results.json").read_text())["metric"] == "VOC area AP"


@pytest.mark.slow
def test_eval_coco_end_to_end(ckpt_dir, tmp_path, capsys):
    code = eval_main(["--dataset", "COCO", "--dataset_root", str(COCO), "--trained_model",
                      str(ckpt_dir / "coco_ckpt.pth"), "--save_folder", str(tmp_path),
                      "--device", "cpu", "--batch_size", "2", "--num_workers", "0",
                      "--max_images", "3", "--no_progress", "--top_k", "50"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "COCO val2017: 3 images" in stdout and "AP50" in stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["dataset"] == "COCO" and set(res["stats"]) >= {"AP", "AP50", "AP75", "APs",
                                                              "APm", "APl", "AR100"}
    assert res["mAP"] == res["stats"]["AP"] and 0.0 <= res["mAP"] <= 1.0
    dets = json.loads((tmp_path / "bbox_val2017_results.json").read_text())
    assert dets and {d["category_id"] for d in dets} <= set(range(1, 91))
    # --top_k 50 caps every class of every image at 50 rows.
    per_class_image = Counter((d["image_id"], d["category_id"]) for d in dets)
    assert max(per_class_image.values()) <= 50
    assert all(d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in dets)
    assert res["files"]["pr_curves"] == str(tmp_path / "pr_curves.png")
    assert cv2.imread(str(tmp_path / "pr_curves.png")).shape == (950, 1400, 3)
    # --from_results on the written json gives the same numbers.
    code = eval_main(["--dataset", "COCO", "--dataset_root", str(COCO), "--from_results",
                      str(tmp_path), "--save_folder", str(tmp_path / "again"),
                      "--max_images", "3"])
    assert code == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["stats"] == res["stats"]


@pytest.mark.slow
def test_test_py_writes_predictions_and_pictures(ckpt_dir, tmp_path):
    pics = tmp_path / "pics"
    code = run_test_py(["--trained_model", str(ckpt_dir / "ssd300_VOC_5.pth"), "--voc_root",
                      str(VOC), "--save_folder", str(tmp_path), "--device", "cpu",
                      "--max_images", "2", "--visual_threshold", "0.3", "--save_images",
                      str(pics), "--num_workers", "0", "--no_progress"])
    assert code == 0
    text = (tmp_path / "test1.txt").read_text()
    assert text.startswith("\nGROUND TRUTH FOR: 2007_000068\nlabel: 26.0 || 44.0 || 265.0 || "
                           "374.0 || 2\n")
    assert text.count("GROUND TRUTH FOR: ") == 2
    preds = [ln for ln in text.splitlines() if " score: " in ln]
    assert preds and preds[0].startswith("1 label: ")
    score = float(preds[0].split(" score: ")[1].split()[0])
    assert score >= 0.3
    assert len(preds[0].split(" score: ")[1].split(" || ")) == 4
    jpgs = sorted(p.name for p in pics.glob("*.jpg"))
    assert jpgs == ["2007_000068.jpg", "2007_000121.jpg"]
    img = cv2.imread(str(pics / "2007_000068.jpg"))
    orig = cv2.imread(str(VOC / "VOC2007" / "JPEGImages" / "2007_000068.jpg"))
    assert img.shape == orig.shape
    assert np.abs(img.astype(int) - orig.astype(int)).mean() > 1.0  # boxes were drawn


def test_cli_errors_are_clear(ckpt_dir, tmp_path, capsys):
    code = eval_main(["--trained_model", str(tmp_path / "missing.pth"), "--voc_root", str(VOC),
                      "--save_folder", str(tmp_path), "--device", "cpu"])
    assert code == 2 and "missing.pth" in capsys.readouterr().err
    code = eval_main(["--trained_model", str(ckpt_dir / "coco_ckpt.pth"), "--voc_root",
                      str(VOC), "--save_folder", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "81 classes" in err
    code = eval_main(["--voc_root", str(tmp_path / "nowhere"), "--save_folder", str(tmp_path)])
    assert code == 2 and "nowhere" in capsys.readouterr().err
    code = eval_main(["--from_results", str(tmp_path / "none"), "--voc_root", str(VOC),
                      "--save_folder", str(tmp_path)])
    assert code == 2 and "none" in capsys.readouterr().err
