"""ssd.pytorch's `layers` import paths, and its old `nms`/`log_sum_exp` helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

_IMPORT_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, torchvision  # noqa: F401
    import ssd.box_utils, ssd.detection, ssd.l2norm, ssd.loss, ssd.priors  # noqa: F401

    opened = []

    def hook(event, args):
        # Imports read .py files (and compile to __pycache__ without -B); anything else
        # opened while importing `layers` would be work done at import time.
        if event == "open" and args and args[0] is not None:
            path = str(args[0])
            if not path.endswith((".py", ".pyc")) and "__pycache__" not in path:
                opened.append(path)

    sys.addaudithook(hook)
    ns = {}
    exec("from layers import *", ns)
    from layers.modules import L2Norm, MultiBoxLoss  # noqa: F401
    from layers.functions import Detect, PriorBox  # noqa: F401
    from layers.box_utils import (center_size, decode, encode, intersect, jaccard,  # noqa: F401
                                  match, nms, point_form)
    print(json.dumps({"opened": opened, "names": sorted(k for k in ns if k != "__builtins__")}))
""")


def test_star_import_gives_ssd_pytorch_names_without_file_io():
    proc = subprocess.run([sys.executable, "-B", "-c", _IMPORT_SCRIPT], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["opened"] == []
    for name in ("PriorBox", "L2Norm", "MultiBoxLoss", "Detect", "box_utils", "match", "decode",
                 "encode", "jaccard", "point_form", "center_size", "intersect", "nms"):
        assert name in result["names"], name


def test_reexports_are_the_package_objects():
    import layers
    import layers.box_utils
    import layers.functions
    import layers.modules
    import ssd.box_utils
    import ssd.detection
    import ssd.l2norm
    import ssd.loss
    import ssd.priors

    assert layers.modules.L2Norm is ssd.l2norm.L2Norm
    assert layers.modules.MultiBoxLoss is ssd.loss.MultiBoxLoss
    assert layers.functions.Detect is ssd.detection.Detect
    assert layers.functions.PriorBox is ssd.priors.PriorBox
    for name in ("match", "decode", "encode", "jaccard", "point_form", "center_size",
                 "intersect"):
        assert getattr(layers.box_utils, name) is getattr(ssd.box_utils, name)
        assert getattr(layers, name) is getattr(ssd.box_utils, name)


def test_old_style_calls_work():
    from layers import L2Norm, MultiBoxLoss, PriorBox
    from ssd.config import voc

    assert PriorBox(voc).forward().shape == (8732, 4)
    assert L2Norm(512, 20).weight.shape == (512,)
    MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False, False)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _reference_nms(boxes, scores, overlap, top_k):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_k > 0:
        order = order[:top_k]
    kept = []
    while order:
        i = order.pop(0)
        kept.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j]) <= overlap]
    return kept


@pytest.mark.parametrize("seed, overlap, top_k", [(0, 0.5, 200), (1, 0.3, 25), (2, 0.45, 0)])
def test_nms_matches_greedy_reference(seed, overlap, top_k):
    from layers.box_utils import nms

    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(120, 2, generator=g)
    boxes = torch.cat([xy, xy + 0.05 + 0.3 * torch.rand(120, 2, generator=g)], dim=1)
    scores = torch.rand(120, generator=g)
    keep, count = nms(boxes, scores, overlap, top_k)
    expected = _reference_nms(boxes.tolist(), scores.tolist(), overlap, top_k)
    assert isinstance(count, int) and count == len(expected)
    assert keep.dtype == torch.long and keep.shape == (120,)
    assert keep[:count].tolist() == expected
    assert (keep[count:] == 0).all()
    if top_k:
        assert count <= top_k


def test_nms_hand_case_and_empty_input():
    from layers.box_utils import nms

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0],    # score 0.9, kept
                          [0.0, 0.0, 1.0, 0.9],    # IoU 0.9 with box 0: suppressed
                          [0.0, 0.0, 1.0, 0.4],    # IoU 0.4 with box 0: kept at 0.45
                          [2.0, 2.0, 3.0, 3.0]])   # disjoint, kept
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    keep, count = nms(boxes, scores, overlap=0.45)
    assert count == 3 and keep.tolist() == [0, 2, 3, 0]
    keep, count = nms(boxes, scores, overlap=0.45, top_k=2)  # only boxes 0 and 1 considered
    assert count == 1 and keep.tolist() == [0, 0, 0, 0]
    keep, count = nms(torch.zeros(0, 4), torch.zeros(0))
    assert count == 0 and keep.shape == (0,)


def test_log_sum_exp_matches_ssd_pytorch_formula():
    from layers.box_utils import log_sum_exp

    x = torch.randn(7, 21, generator=torch.Generator().manual_seed(3)) * 10
    x_max = x.max()
    expected = torch.log(torch.sum(torch.exp(x - x_max), 1, keepdim=True)) + x_max
    torch.testing.assert_close(log_sum_exp(x), expected)
