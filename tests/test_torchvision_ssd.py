"""torchvision's ssd300_vgg16 converted with the CLI reproduces torchvision: priors, raw outputs,
final detections (exactly on 300x300 images; on other sizes up to the uint8 resize, bounded)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.models.detection import SSD300_VGG16_Weights, ssd300_vgg16
from torchvision.models.detection.ssd import SSD, SSDHead

from ssd import Detector
from ssd.config import get_config
from ssd.data.classes import COCO91_CLASSES
from ssd.priors import prior_boxes
from ssd.weights import WeightsFileError, convert_torchvision_ssd, read_weights_file
from ssd.weights.cli import main as weights_cli

VAL = Path(__file__).resolve().parents[1] / "data" / "samples" / "coco_mini" / "images" / "val2017"
IMAGE = VAL / "000000056344.jpg"  # 640 x 480
IMAGE2 = VAL / "000000020992.jpg"  # 500 x 333
GRIDS = [[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]]


def _rgb(path: Path, crop: int | None = None) -> np.ndarray:
    bgr = cv2.imread(str(path))
    if crop:
        bgr = bgr[:crop, :crop]
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _tv_input(rgb: np.ndarray) -> torch.Tensor:
    """torchvision's own input convention: RGB float in [0, 1], CHW."""
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255


@pytest.fixture(scope="module")
def tv():
    torch.manual_seed(0)
    return ssd300_vgg16(weights=None, weights_backbone=None).eval()


@pytest.fixture(scope="module")
def converted(tv, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tv_ssd")
    torch.save(tv.state_dict(), folder / "ssd300_vgg16_random.pth")
    out = folder / "ssd300_tv.pth"
    assert weights_cli(["convert-torchvision-ssd", str(folder / "ssd300_vgg16_random.pth"),
                        str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def det(converted):
    return Detector.from_checkpoint(converted, device="cpu")


def _run_tv(model, rgb: np.ndarray):
    """torchvision's detections and its raw head outputs for one image."""
    raw = {}
    hook = model.head.register_forward_hook(lambda m, i, o: raw.update(o))
    try:
        with torch.inference_mode():
            out = model([_tv_input(rgb)])[0]
    finally:
        hook.remove()
    return {k: v.numpy() for k, v in out.items()}, raw


def _match(ref: dict, ours, names, box_tol: float, score_tol: float) -> tuple[float, float]:
    """Pair every torchvision detection with one of ours of the same class within the
    tolerances (one to one); returns the largest box and score differences."""
    assert len(ours) == len(ref["scores"])
    our_names = np.array(ours.class_names)
    used = np.zeros(len(ours), bool)
    worst_box = worst_score = 0.0
    for i in np.argsort(-ref["scores"], kind="stable"):
        name = names[ref["labels"][i] - 1]
        box_d = np.abs(ours.boxes - ref["boxes"][i]).max(1)
        score_d = np.abs(ours.scores - ref["scores"][i])
        ok = np.where(~used & (our_names == name) & (box_d <= box_tol)
                      & (score_d <= score_tol))[0]
        assert len(ok), f"torchvision's {name} {ref['boxes'][i]} {ref['scores'][i]} unmatched"
        j = ok[np.argmin(box_d[ok])]
        used[j] = True
        worst_box, worst_score = max(worst_box, box_d[j]), max(worst_score, score_d[j])
    return worst_box, worst_score


def test_coco_names_are_torchvisions(tmp_path):
    from ssd.data.classes import load_class_names

    categories = SSD300_VGG16_Weights.COCO_V1.meta["categories"]
    assert categories[0] == "__background__"
    assert list(COCO91_CLASSES) == categories[1:]
    # a class-list file may repeat the "N/A" placeholder (and only it)
    (tmp_path / "coco91.txt").write_text("\n".join(COCO91_CLASSES) + "\n")
    assert load_class_names(tmp_path / "coco91.txt") == COCO91_CLASSES
    (tmp_path / "dup.txt").write_text("cat\ndog\ncat\n")
    with pytest.raises(ValueError, match="listed twice"):
        load_class_names(tmp_path / "dup.txt")


def test_priors_equal_torchvisions_and_the_clip_rule_is_the_difference(tv):
    theirs = tv.anchor_generator._grid_default_boxes(GRIDS, [300, 300]).double()
    ours = prior_boxes(get_config("tv_coco300"), dtype=torch.float64)
    assert ours.shape == theirs.shape == (8732, 4)
    assert (ours - theirs).abs().max() <= 1e-6
    # ssd.pytorch's rule (coco300 clamps the centres too) moves the last 10x10 row/column
    pytorch_rule = prior_boxes(get_config("coco300"), dtype=torch.float64)
    moved = ((pytorch_rule - theirs).abs() > 1e-6).any(1).nonzero().squeeze(1)
    assert len(moved) == 114 and moved.min() == 7996 and moved.max() == 8541


def test_converted_file_carries_config_and_names(converted, det):
    found = read_weights_file(converted)
    assert found.class_names == COCO91_CLASSES and found.config["name"] == "COCO_TORCHVISION"
    assert found.config["detect"]["candidates_per_class"] == 400
    assert found.config["clip"] == "wh" and found.config["num_classes"] == 91
    assert det.class_names == list(COCO91_CLASSES)
    assert det.model.num_classes == 91 and det.model.max_per_image == 200
    assert det.model.clip_boxes and det.model.keep_empty_boxes and det.model.max_log_wh > 4


def test_raw_outputs_equal(tv, det):
    x = torch.from_numpy(_rgb(IMAGE2, 300)).permute(2, 0, 1).float()
    with torch.inference_mode():
        images, _ = tv.transform([x / 255])
        t = images.tensors
        theirs = tv.head(list(tv.backbone(t).values()))
        net = det.model
        net.phase = "train"
        try:
            loc, conf, priors = net(t)
        finally:
            net.phase = "test"
    for ours, key in ((loc, "bbox_regression"), (conf, "cls_logits")):
        ref = theirs[key]
        assert ours.shape == ref.shape
        scale = float(ref.abs().max())
        assert float((ours - ref).abs().max()) <= 1e-6 * scale, key


def test_detections_equal_on_a_300x300_image(tv, det):
    rgb = _rgb(IMAGE2, 300)  # a real photo's 300x300 corner: no resize on either side
    ref, _ = _run_tv(tv, rgb)
    # the random weights give spread-out scores: not all tied, and more than the 200 kept
    assert len(ref["scores"]) == 200 and len(np.unique(ref["scores"])) > 190
    assert ref["scores"].max() - ref["scores"].min() > 0.1
    ours = det.predict(rgb, threshold=0.0)
    box, score = _match(ref, ours, det.class_names, box_tol=0.01, score_tol=1e-5)
    assert box <= 0.01 and score <= 1e-5


def test_other_sizes_differ_only_by_the_uint8_resize(tv, det):
    """cv2 resizes uint8 pixels (fixed-point weights, rounded to integers); torchvision
    resizes the normalised floats. Inputs then differ by < 1 grey level; given the same
    resized pixels the two agree exactly, and the resize's effect on detections is bounded."""
    rgb = _rgb(IMAGE)
    h, w = rgb.shape[:2]
    with torch.inference_mode():
        tv_in = tv.transform([_tv_input(rgb)])[0].tensors[0]
    our_in = det._preprocess(np.ascontiguousarray(rgb[:, :, ::-1]))
    input_diff = float((tv_in - our_in).abs().max())  # in grey levels (std = 1/255)
    assert 0 < input_diff <= 1.0

    ours = det.predict(rgb, threshold=0.0)
    # (1) torchvision given cv2's resized pixels gives our detections, scaled to the image
    small = np.ascontiguousarray(cv2.resize(rgb, (300, 300), interpolation=cv2.INTER_LINEAR))
    same, raw_same = _run_tv(tv, small)
    same["boxes"] = same["boxes"] * np.array([w, h, w, h], np.float32) / 300
    _match(same, ours, det.class_names, box_tol=0.01 * max(w, h) / 300, score_tol=1e-5)

    # (2) the resize's effect: on every prior's scores and offsets, and on the best detections
    ref, raw_ref = _run_tv(tv, rgb)
    score_diff = (raw_ref["cls_logits"].softmax(-1) - raw_same["cls_logits"].softmax(-1)).abs()
    loc_diff = (raw_ref["bbox_regression"] - raw_same["bbox_regression"]).abs()
    assert float(score_diff.max()) <= 0.02 and float(loc_diff.max()) <= 0.1
    top = np.argsort(-ref["scores"])[:20]
    best = {k: v[top] for k, v in ref.items()}
    our_names = np.array(ours.class_names)
    for box, score, label in zip(best["boxes"], best["scores"], best["labels"]):
        cand = (our_names == det.class_names[label - 1]) & \
            (np.abs(ours.scores - score) <= 0.02) & \
            (np.abs(ours.boxes - box).max(1) <= 0.02 * max(w, h))
        assert cand.any(), (box, score, label)


def test_other_class_counts(tv, tmp_path):
    torch.manual_seed(1)
    head = SSDHead([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4], 5)
    tv5 = SSD(tv.backbone, tv.anchor_generator, (300, 300), 5, head=head,
              image_mean=[0.48235, 0.45882, 0.40784], image_std=[1 / 255] * 3).eval()
    torch.save(tv5.state_dict(), tmp_path / "tv5.pth")
    (tmp_path / "classes.txt").write_text("cat\ndog\nperson\ncar\n")
    out = tmp_path / "ours5.pth"
    assert weights_cli(["convert-torchvision-ssd", str(tmp_path / "tv5.pth"), str(out),
                        "--classes", str(tmp_path / "classes.txt")]) == 0
    det5 = Detector.from_checkpoint(out, device="cpu")
    assert det5.class_names == ["cat", "dog", "person", "car"]
    rgb = _rgb(IMAGE, 300)
    ref, _ = _run_tv(tv5, rgb)
    assert len(ref["scores"]) > 50
    _match(ref, det5.predict(rgb, threshold=0.0), det5.class_names, 0.01, 1e-5)
    # names default to class_1.. and a wrong count is refused
    assert convert_torchvision_ssd(tv5.state_dict()).class_names == \
        ("class_1", "class_2", "class_3", "class_4")
    with pytest.raises(WeightsFileError, match="3 class names .* 5 outputs"):
        convert_torchvision_ssd(tv5.state_dict(), ["a", "b", "c"])


def test_other_state_dicts_are_refused(tmp_path):
    from ssd.model import build_ssd

    ours = build_ssd("train", 300, 21).state_dict()
    with pytest.raises(WeightsFileError, match="not torchvision's ssd300_vgg16"):
        convert_torchvision_ssd(ours)
    torch.save(ours, tmp_path / "ours.pth")
    assert weights_cli(["convert-torchvision-ssd", str(tmp_path / "ours.pth"),
                        str(tmp_path / "out.pth")]) == 1
    assert not (tmp_path / "out.pth").exists()
