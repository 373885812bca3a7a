"""Shared pieces of the export tests: a deterministic model with spread-out scores and a
comparison of detection lists that does not depend on the order of near-equal scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
VOC_IMAGES = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007" / "JPEGImages"


def sample_images(n: int) -> list[str]:
    return [str(p) for p in sorted(VOC_IMAGES.glob("*.jpg"))[:n]]


def scored_ssd(size: int = 300, num_classes: int = 21, seed: int = 0) -> torch.nn.Module:
    """A test-phase SSD with fixed random weights whose class scores spread over (0, 1):
    random biases on the conf heads give hundreds of detections above 0.5 on real images."""
    from ssd import build_ssd

    torch.manual_seed(seed)
    model = build_ssd("test", size, num_classes)
    with torch.no_grad():
        for head in model.conf:
            head.bias.normal_(0.0, 1.5)
    return model.eval()


def assert_same_detections(a, b, *, score_atol: float = 1e-4, box_atol: float = 0.05) -> None:
    """``a`` and ``b`` (:class:`ssd.Detections`) hold the same detections: a one-to-one
    matching of rows with equal labels, scores within ``score_atol`` and boxes (pixels)
    within ``box_atol``."""
    assert len(a) == len(b), (len(a), len(b))
    assert tuple(a.image_size) == tuple(b.image_size)
    if not len(a):
        return
    same_label = a.labels[:, None] == b.labels[None, :]
    cost = np.abs(a.boxes[:, None, :] - b.boxes[None, :, :]).max(-1) / box_atol
    cost = np.maximum(cost, np.abs(a.scores[:, None] - b.scores[None, :]) / score_atol)
    cost[~same_label] = np.inf
    best = cost.argmin(1)
    assert np.all(cost[np.arange(len(a)), best] <= 1.0), float(cost.min(1).max())
    assert len(set(best.tolist())) == len(a), "two rows matched the same row"
    assert [a.class_names[i] for i in range(len(a))] == [str(n) for n in a.class_names]
