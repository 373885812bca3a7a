"""The notebook API: Detector round trip, input conventions, drawing, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ssd.detector import Detections, Detector, collect_detections
from ssd.visualize import draw_detections

VOC = Path(__file__).resolve().parents[1] / "data" / "samples" / "voc_mini" / "VOCdevkit"
IMAGE = VOC / "VOC2007" / "JPEGImages" / "2007_000068.jpg"  # 500 x 375


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from ssd.model import build_ssd

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "ssd300_VOC_random.pth"
    torch.save(build_ssd("test", 300, 21).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def detector(checkpoint):
    return Detector.from_checkpoint(checkpoint, config="voc300", device="cpu")


@pytest.fixture(scope="module")
def from_path(detector):
    return detector.predict(IMAGE, threshold=0.05)


def test_round_trip_boxes_inside_the_image(detector, from_path):
    from ssd.data import VOC_CLASSES

    r = from_path
    assert isinstance(r, Detections) and len(r) > 0 and r.image_size == (375, 500)
    assert r.source == str(IMAGE)
    assert r.boxes.shape == (len(r), 4) and r.boxes.dtype == np.float32
    assert (r.boxes[:, [0, 2]] >= 0).all() and (r.boxes[:, [0, 2]] <= 500).all()
    assert (r.boxes[:, [1, 3]] >= 0).all() and (r.boxes[:, [1, 3]] <= 375).all()
    assert (r.boxes[:, 2] >= r.boxes[:, 0]).all() and (r.boxes[:, 3] >= r.boxes[:, 1]).all()
    assert (r.scores >= 0.05).all() and (np.diff(r.scores) <= 0).all()
    assert r.labels.min() >= 0 and r.labels.max() < 20
    assert r.class_names == [VOC_CLASSES[k] for k in r.labels]
    drawn = draw_detections(cv2.imread(str(IMAGE))[:, :, ::-1], r)
    assert drawn.shape == (375, 500, 3) and drawn.dtype == np.uint8


def test_arrays_are_rgb_and_match_paths(detector, from_path):
    rgb = cv2.imread(str(IMAGE))[:, :, ::-1].copy()
    both = detector.predict([rgb, rgb.astype(np.float32) / 255.0], threshold=0.05)
    assert isinstance(both, list) and len(both) == 2
    for r in both:
        np.testing.assert_allclose(r.boxes, from_path.boxes, atol=1e-3)
        np.testing.assert_allclose(r.scores, from_path.scores, atol=1e-5)
        assert r.source is None
    # The same pixels in BGR order are a different picture to the network.
    bgr = detector.predict(rgb[:, :, ::-1].copy(), threshold=0.05)
    assert len(bgr) != len(from_path) or not np.allclose(bgr.scores, from_path.scores)


def test_preprocessing_is_the_datasets(detector):
    from ssd.data import BaseTransform, VOCDetection

    ds = VOCDetection(VOC, [("2007", "test")], BaseTransform(300))
    i = [k for k, (_, name) in enumerate(ds.ids) if name == "2007_000068"][0]
    assert torch.equal(detector._preprocess(ds.pull_image(i)), ds.pull_item(i)[0])


def test_dicts_are_plain_json(detector, from_path):
    d = from_path.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["image_size"] == [375, 500] and len(d["boxes"]) == len(from_path)
    as_dict = detector.predict(str(IMAGE), threshold=0.5, as_dict=True)
    assert isinstance(as_dict, dict) and all(s >= 0.5 for s in as_dict["scores"])


def test_collect_detections_filters_sorts_and_clips():
    per_class = [np.zeros((0, 5)), np.array([[-5, 10, 30, 40, 0.4], [1, 1, 2, 2, 0.1]]),
                 np.array([[90, 50, 120, 70, 0.8]])]
    r = collect_detections(per_class, (60, 100), 0.3, ["cat", "dog"])
    assert r.class_names == ["dog", "cat"] and r.labels.tolist() == [1, 0]
    np.testing.assert_allclose(r.scores, [0.8, 0.4])
    np.testing.assert_allclose(r.boxes, [[90, 50, 100, 60], [0, 10, 30, 40]])


def test_draw_detections_draws_labelled_boxes():
    img = np.full((120, 160, 3), 255, np.uint8)
    result = {"boxes": [[20, 40, 100, 110]], "scores": [0.87], "labels": [3]}
    out = draw_detections(img, result, class_names=["a", "b", "c", "dog"])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 255).all()  # the input is not modified
    assert (out[75, 18:23] != 255).any()  # left edge of the box
    assert (out[30:40, 20:60] != 255).any()  # the label above the box
    assert (out[60:100, 40:90] == 255).all()  # the inside stays clear
    nothing = draw_detections(img, result, threshold=0.9)
    assert (nothing == 255).all()
    gray = draw_detections(np.zeros((30, 40), np.uint8), result)
    assert gray.shape == (30, 40, 3)


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Detector.from_checkpoint(tmp_path / "nope.pth", device="cpu")


def test_wrong_class_count_is_explained(checkpoint):
    from ssd.weights import WeightsMismatchError

    with pytest.raises(WeightsMismatchError, match="21 classes"):
        Detector.from_checkpoint(checkpoint, config="coco300", device="cpu")
    with pytest.raises(WeightsMismatchError, match="21 classes"):
        Detector.from_checkpoint(checkpoint, classes=["cat", "dog"], device="cpu")


def test_bad_images_are_named(detector, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        detector.predict(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        detector.predict(broken)
    with pytest.raises(ValueError, match="shape"):
        detector.predict(np.zeros((4, 5, 7), np.uint8))


def test_example_script_runs(checkpoint, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(repo / "examples" / "predict.py"), "--checkpoint", str(checkpoint),
         "--images", str(IMAGE), "--threshold", "0.6", "--device", "cpu", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2007_000068.jpg:" in proc.stdout
    assert cv2.imread(str(tmp_path / "2007_000068.jpg")).shape == (375, 500, 3)
