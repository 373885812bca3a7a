"""eval.py/test.py take the config and class names from files that carry them."""

from __future__ import annotations

from pathlib import Path

import torch

from ssd.evaluation.cli import test_main as run_test_py

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def test_test_py_reads_config_and_classes_from_the_file(tmp_path):
    from ssd.config import get_config
    from ssd.model import build_ssd
    from ssd.weights import save_weights_file

    torch.manual_seed(0)
    # 4 priors per cell everywhere (its heads load into no built-in config) and VOC's names
    # reversed (it labels differently).
    cfg = {**get_config("voc300"), "aspect_ratios": [[2]] * 6, "mbox": [4] * 6}
    names = list(reversed(VOC_CLASSES))
    path = save_weights_file(tmp_path / "mine.pth", build_ssd("test", cfg=cfg).state_dict(),
                             config=cfg, class_names=names)
    code = run_test_py(["--trained_model", str(path), "--voc_root", str(VOC), "--save_folder",
                        str(tmp_path), "--device", "cpu", "--max_images", "1",
                        "--visual_threshold", "0.0", "--num_workers", "0", "--no_progress",
                        "--batch_size", "1"])
    assert code == 0
    text = (tmp_path / "test1.txt").read_text()
    # 2007_000068's bird is label 2 in VOC order, 17 in the file's.
    assert text.startswith("\nGROUND TRUTH FOR: 2007_000068\nlabel: 26.0 || 44.0 || 265.0 || "
                           "374.0 || 17\n")
    first = next(ln for ln in text.splitlines() if " score: " in ln)
    assert first.startswith("1 label: tvmonitor ")  # class 1 of the file



def test_eval_coco_with_torchvision_label_slots(tmp_path, capsys):
    """A 91-output model whose label l is COCO category id l (torchvision's layout, N/A in the
    unused slots) is scored by name against the annotation file's categories."""
    import json

    from ssd.config import get_config
    from ssd.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
    from ssd.evaluation.cli import eval_main
    from ssd.model import build_ssd
    from ssd.weights import save_weights_file

    by_id = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    names = [by_id.get(i, "N/A") for i in range(1, 91)]
    torch.manual_seed(0)
    cfg = get_config("coco300", num_classes=91)
    path = save_weights_file(tmp_path / "tv_like.pth", build_ssd("test", cfg=cfg).state_dict(),
                             config=cfg, class_names=names)
    code = eval_main(["--dataset", "COCO", "--dataset_root", str(REPO / "data/samples/coco_mini"),
                      "--trained_model", str(path), "--save_folder", str(tmp_path / "out"),
                      "--device", "cpu", "--batch_size", "2", "--num_workers", "0",
                      "--max_images", "2", "--no_progress", "--top_k", "5"])
    assert code == 0, capsys.readouterr().err
    dets = json.loads((tmp_path / "out" / "bbox_val2017_results.json").read_text())
    cats = {d["category_id"] for d in dets}
    # Real categories keep their ids (label == id); N/A slots get -1, which COCOeval ignores.
    assert cats <= set(COCO_CATEGORY_IDS) | {-1} and len(cats - {-1}) > 10
    assert -1 in cats  # N/A slots (ids 12, 26, ...: no such category) matched no name


def test_default_model_falls_back_to_the_cached_zoo_copy(tmp_path, monkeypatch):
    import argparse

    from ssd.evaluation.cli import DEFAULT_MODEL
    from ssd.evaluation.weights_meta import weights_defaults

    monkeypatch.chdir(tmp_path)  # no weights/ here
    monkeypatch.setenv("SSD_HOME", str(tmp_path / "cache"))
    args = argparse.Namespace(classes=None, from_results=None, trained_model=DEFAULT_MODEL,
                              config=None, dataset="VOC")
    assert weights_defaults(args) == (None, None) and args.weights_path == DEFAULT_MODEL
    (tmp_path / "cache").mkdir()
    torch.save({"w": torch.ones(2)}, tmp_path / "cache" / "ssd300_mAP_77.43_v2.pth")
    config, classes = weights_defaults(args)
    assert args.weights_path == str(tmp_path / "cache" / "ssd300_mAP_77.43_v2.pth")
    assert config == "voc300" and classes == list(VOC_CLASSES)
