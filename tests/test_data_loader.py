"""detection_collate, build_train_loader, worker seeding, and the root ``data`` package."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from ssd.data import (
    SSDAugmentation,
    VOCDetection,
    build_train_loader,
    detection_collate,
    reseed_transforms,
    seed_worker,
    set_epoch,
)

REPO = Path(__file__).resolve().parents[1]
VOC_MINI = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"


class SameImage(Dataset):
    """Every index is the same small image and box: only the augmentation varies."""

    def __init__(self, n: int = 16) -> None:
        self.n = n
        self.img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        self.transform = SSDAugmentation(32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        img, boxes, labels = self.transform(self.img, np.array([[0.2, 0.2, 0.7, 0.8]]),
                                            np.array([1.0]))
        target = np.hstack((boxes, labels[:, None]))
        return torch.from_numpy(img.transpose(2, 0, 1).copy()), target


def test_detection_collate():
    batch = [(torch.full((3, 4, 4), 1.0), np.array([[0.1, 0.2, 0.3, 0.4, 5]], np.float64)),
             (torch.full((3, 4, 4), 2.0), np.zeros((0, 5), np.float32)),
             (np.full((3, 4, 4), 3.0, np.float32), [[0, 0, 1, 1, 0], [0.5, 0.5, 1, 1, 2]])]
    images, targets = detection_collate(batch)
    assert images.shape == (3, 3, 4, 4) and images.dtype == torch.float32
    assert images[:, 0, 0, 0].tolist() == [1.0, 2.0, 3.0]
    assert [t.shape for t in targets] == [(1, 5), (0, 5), (2, 5)]
    assert all(t.dtype == torch.float32 for t in targets)
    assert torch.allclose(targets[0], torch.tensor([[0.1, 0.2, 0.3, 0.4, 5.0]]))
    assert targets[2].tolist() == [[0, 0, 1, 1, 0], [0.5, 0.5, 1, 1, 2]]


def _batches(loader, n):
    out = []
    for k, batch in enumerate(loader):
        if k == n:
            break
        out.append(batch)
    return out


def _equal(a, b):
    return all(torch.equal(x[0], y[0]) and all(torch.equal(s, t) for s, t in zip(x[1], y[1]))
               for x, y in zip(a, b))


def test_single_process_loader_is_reproducible_from_seed():
    ds = VOCDetection(VOC_MINI, [("2007", "trainval")], SSDAugmentation(64))
    loader = build_train_loader(ds, batch_size=4, num_workers=0, seed=3)
    assert loader.pin_memory == torch.cuda.is_available() and loader.drop_last
    a = _batches(loader, 3)
    b = _batches(build_train_loader(ds, batch_size=4, num_workers=0, seed=3), 3)
    c = _batches(build_train_loader(ds, batch_size=4, num_workers=0, seed=4), 3)
    assert _equal(a, b) and not _equal(a, c)
    images, targets = a[0]
    assert images.shape == (4, 3, 64, 64) and len(targets) == 4
    assert all(t.shape[1] == 5 for t in targets)
    assert len(loader) == len(ds) // 4  # drop_last


def test_workers_draw_differently_and_seeded_runs_repeat():
    def run(seed):
        loader = build_train_loader(SameImage(), batch_size=4, num_workers=2, shuffle=False,
                                    seed=seed, persistent_workers=False)
        return _batches(loader, 2)  # batch 0 from worker 0, batch 1 from worker 1

    a, b, c = run(0), run(0), run(1)
    assert _equal(a, b) and not _equal(a, c)
    first, second = a[0][0], a[1][0]
    for i in range(4):  # no image of worker 0 equals any of worker 1
        assert all(not torch.equal(first[i], second[j]) for j in range(4))
    for i in range(4):  # and draws differ within a worker
        assert all(not torch.equal(first[i], first[j]) for j in range(i + 1, 4))


def test_distributed_sampler_and_rank_seeds():
    ds = SameImage(20)
    loaders = [build_train_loader(ds, 2, distributed=True, rank=r, world_size=2, seed=5)
               for r in (0, 1)]
    assert all(isinstance(ld.sampler, DistributedSampler) for ld in loaders)
    idx = [list(ld.sampler) for ld in loaders]
    assert not set(idx[0]) & set(idx[1]) and len(idx[0]) == len(idx[1]) == 10
    assert loaders[0].generator.initial_seed() != loaders[1].generator.initial_seed()
    set_epoch(loaders[0], 1)
    assert list(loaders[0].sampler) != idx[0]


def test_seed_worker_and_reseed_transforms():
    torch.manual_seed(12)
    seed_worker(0)
    a = (random.random(), np.random.random())
    torch.manual_seed(12)
    seed_worker(0)
    assert (random.random(), np.random.random()) == a
    ds = torch.utils.data.ConcatDataset([SameImage(2), SameImage(3)])
    assert reseed_transforms(ds, 7) == 2
    assert all(d.transform.seed == 7 for d in ds.datasets)


def test_from_data_import_star_reads_no_file(tmp_path):
    """Import the root ``data`` package with an audit hook recording data-file accesses."""
    script = f"""
import json, os, sys
seen = []
def hook(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.stat") and args and args[0]:
        p = str(args[0])
        if ".dist-info" in p or ".egg-info" in p:  # package metadata (entry points)
            return
        if p.endswith((".json", ".xml", ".jpg", ".png", ".txt")) or "samples" in p \\
                or p.startswith({str(tmp_path)!r}):
            seen.append((event, p))
sys.addaudithook(hook)
from data import *
print(json.dumps({{"seen": seen, "voc": VOC_ROOT, "coco": COCO_ROOT,
                   "names": sorted(k for k in dir() if not k.startswith("_"))}}))
"""
    env = {**os.environ, "SSD_VOC_ROOT": str(tmp_path / "voc"),
           "SSD_COCO_ROOT": str(tmp_path / "coco"), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["seen"] == []
    assert result["voc"] == str(tmp_path / "voc") and result["coco"] == str(tmp_path / "coco")
    for name in ("voc", "coco", "MEANS", "VOCDetection", "VOCAnnotationTransform",
                 "VOC_CLASSES", "VOC_ROOT", "COCODetection", "COCO_ROOT", "COCO_CLASSES",
                 "BaseTransform", "SSDAugmentation", "detection_collate", "HOME"):
        assert name in result["names"], name
