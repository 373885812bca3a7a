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
    # SSD512 (it loads into nothing else) with VOC's names reversed (it labels differently).
    names = list(reversed(VOC_CLASSES))
    path = save_weights_file(tmp_path / "mine.pth", build_ssd("test", cfg="voc512").state_dict(),
                             config=get_config("voc512"),
                             class_names=names)
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

