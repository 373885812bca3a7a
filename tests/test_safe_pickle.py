"""detections.pkl and the annotation cache are read as data: a pickle that calls code is refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from ssd.evaluation.results import load_detections_pkl, save_detections_pkl
from ssd.evaluation.voc import load_annotations


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.target}",))


def test_detections_pkl_round_trips_arrays(tmp_path):
    boxes = [[np.zeros((0, 5), np.float32)],
             [np.array([[1, 2, 3, 4, 0.5]], np.float32), np.zeros((0, 5), np.float64)]]
    path = save_detections_pkl(boxes, tmp_path / "detections.pkl")
    back = load_detections_pkl(path)
    assert [[a.dtype for a in c] for c in back] == [[a.dtype for a in c] for c in boxes]
    assert all(np.array_equal(a, b) for c1, c2 in zip(back, boxes) for a, b in zip(c1, c2))


def test_malicious_detections_pkl_is_refused_and_not_run(tmp_path):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "detections.pkl"
    path.write_bytes(pickle.dumps([[_Evil(str(target))]]))
    with pytest.raises(ValueError, match="system.*not executed"):
        load_detections_pkl(path)
    assert not target.exists()


def test_malicious_annotation_cache_is_rebuilt_not_run(tmp_path):
    root = "data/samples/voc_mini/VOCdevkit/VOC2007"
    names = ["2007_000033"] if os.path.exists(f"{root}/Annotations/2007_000033.xml") else \
        sorted(p[:-4] for p in os.listdir(f"{root}/Annotations"))[:1]
    annopath = f"{root}/Annotations/{{}}.xml"
    good = load_annotations(annopath, names, cachedir=tmp_path)
    (cache,) = [p for p in tmp_path.iterdir() if p.is_file()]
    target = tmp_path / "pwned.txt"
    cache.write_bytes(pickle.dumps(_Evil(str(target))))
    assert load_annotations(annopath, names, cachedir=tmp_path) == good
    assert not target.exists()
