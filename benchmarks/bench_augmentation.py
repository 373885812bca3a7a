"""Images/s of the SSD training data pipeline, per process, against a float32 baseline.

Run: ``python benchmarks/bench_augmentation.py [--root data/samples/voc_mini/VOCdevkit]
[--rounds 5] [--cv2-threads 1]``.

Four loops over the VOC ``trainval`` images, all in one process (the ``num_workers=0`` view;
a DataLoader multiplies this by its workers):

* ``ours, loading+augmentation``: ``VOCDetection(..., SSDAugmentation(300))[i]``: read the
  XML and the JPEG, augment, make the CHW RGB tensor;
* ``ours, augmentation only``: ``SSDAugmentation(300)`` on images already in memory;
* ``float32 baseline``: the same loops with :class:`FloatAugmentation` below, a float32
  implementation of ssd.pytorch's augmentation steps written for this benchmark (convert to
  float first, distort the whole image, build the expanded canvas, crop with a Python loop of
  tries, mirror, resize the float image, subtract the mean), reading images with
  ``cv2.imread`` as ssd.pytorch did. It stands in for ssd.pytorch's pipeline (whose own code is
  not part of this project) under the same machine load.

The loops alternate, ``--rounds`` times each, and the median rate of each is printed, so that
load from other processes hits all of them alike. OpenCV is limited to ``--cv2-threads``
threads (1, as in our DataLoader workers).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import cv2
import numpy as np
import torch

from ssd.config import MEANS
from ssd.data import SSDAugmentation, VOCDetection
from ssd.data.augmentations import CROP_MODES, iou_with_rects


class FloatAugmentation:
    """ssd.pytorch-style float32 augmentation (baseline for timing only)."""

    def __init__(self, size: int = 300, mean=MEANS, seed: int = 0) -> None:
        self.size = size
        self.mean = np.array(mean, dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def _photometric(self, img: np.ndarray) -> np.ndarray:
        r = self.rng
        if r.random() < 0.5:
            img += r.uniform(-32, 32)
        contrast_first = r.random() < 0.5
        if contrast_first and r.random() < 0.5:
            img *= r.uniform(0.5, 1.5)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if r.random() < 0.5:
            img[:, :, 1] *= r.uniform(0.5, 1.5)
        if r.random() < 0.5:
            img[:, :, 0] += r.uniform(-18, 18)
            img[:, :, 0][img[:, :, 0] > 360.0] -= 360.0
            img[:, :, 0][img[:, :, 0] < 0.0] += 360.0
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if not contrast_first and r.random() < 0.5:
            img *= r.uniform(0.5, 1.5)
        if r.random() < 0.5:
            img = img[:, :, list(r.permutation(3))]
        return img

    def _expand(self, img, boxes):
        r = self.rng
        if r.random() < 0.5:
            return img, boxes
        h, w, c = img.shape
        ratio = r.uniform(1, 4)
        left, top = int(r.uniform(0, w * ratio - w)), int(r.uniform(0, h * ratio - h))
        canvas = np.empty((int(h * ratio), int(w * ratio), c), dtype=img.dtype)
        canvas[:, :, :] = self.mean
        canvas[top:top + h, left:left + w] = img
        return canvas, boxes + (left, top, left, top)

    def _crop(self, img, boxes, labels):
        r = self.rng
        h, w = img.shape[:2]
        while True:
            mode = CROP_MODES[r.integers(len(CROP_MODES))]
            if mode is None:
                return img, boxes, labels
            lo = -np.inf if mode[0] is None else mode[0]
            for _ in range(50):
                cw, ch = r.uniform(0.3 * w, w), r.uniform(0.3 * h, h)
                if ch / cw < 0.5 or ch / cw > 2:
                    continue
                left, top = r.uniform(0, w - cw), r.uniform(0, h - ch)
                rect = np.array([int(left), int(top), int(left + cw), int(top + ch)])
                if iou_with_rects(boxes, rect[None].astype(np.float64)).max() < lo:
                    continue
                centers = (boxes[:, :2] + boxes[:, 2:]) / 2
                m = ((rect[0] < centers[:, 0]) & (rect[1] < centers[:, 1])
                     & (rect[2] > centers[:, 0]) & (rect[3] > centers[:, 1]))
                if not m.any():
                    continue
                patch = img[rect[1]:rect[3], rect[0]:rect[2], :]
                b = boxes[m].copy()
                b[:, :2] = np.maximum(b[:, :2], rect[:2]) - rect[:2]
                b[:, 2:] = np.minimum(b[:, 2:], rect[2:]) - rect[:2]
                return patch, b, labels[m]

    def __call__(self, img, boxes, labels):
        h, w = img.shape[:2]
        img = img.astype(np.float32)
        boxes = boxes * (w, h, w, h)
        img = self._photometric(img)
        img, boxes = self._expand(img, boxes)
        if len(boxes):
            img, boxes, labels = self._crop(img, boxes, labels)
        h, w = img.shape[:2]
        if self.rng.random() < 0.5:
            img = img[:, ::-1].copy()
            boxes = boxes.copy()
            boxes[:, 0::2] = w - boxes[:, 2::-2]
        boxes = boxes / (w, h, w, h)
        img = cv2.resize(img, (self.size, self.size))
        return (img - self.mean).astype(np.float32), boxes, labels


class FloatVOC(VOCDetection):
    """VOCDetection reading with plain ``cv2.imread`` and ssd.pytorch's tensor step."""

    def pull_item(self, index):
        root = self._parse_xml(index)
        img = cv2.imread(self.image_path(index))
        h, w = img.shape[:2]
        target = np.array(self._annotate(root, index, w, h), dtype=np.float64).reshape(-1, 5)
        img, boxes, labels = self.transform(img, target[:, :4], target[:, 4])
        img = img[:, :, (2, 1, 0)]
        target = np.hstack((boxes, labels[:, None]))
        return torch.from_numpy(img).permute(2, 0, 1), target, h, w


def rate(fn: Callable[[int], object], n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="data/samples/voc_mini/VOCdevkit")
    p.add_argument("--set", default="2007:trainval")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=2, help="passes over the set per round")
    p.add_argument("--cv2-threads", type=int, default=1)
    args = p.parse_args()
    cv2.setNumThreads(args.cv2_threads)
    torch.set_num_threads(1)

    ours = VOCDetection(args.root, [args.set], SSDAugmentation(300, seed=0))
    base = FloatVOC(args.root, [args.set], FloatAugmentation(300, seed=0))
    n = len(ours)
    images = [ours.pull_image(i) for i in range(n)]
    targets = [np.asarray(base._annotate(base._parse_xml(i), i, im.shape[1], im.shape[0]),
                          dtype=np.float32).reshape(-1, 5) for i, im in enumerate(images)]
    aug, faug = SSDAugmentation(300, seed=1), FloatAugmentation(300, seed=1)
    loops = {
        "ours, loading+augmentation": lambda i: ours[i % n],
        "float32 baseline, loading+augmentation": lambda i: base[i % n],
        "ours, augmentation only": lambda i: aug(images[i % n], targets[i % n][:, :4],
                                                 targets[i % n][:, 4]),
        "float32 baseline, augmentation only": lambda i: faug(images[i % n],
                                                              targets[i % n][:, :4],
                                                              targets[i % n][:, 4]),
    }
    results: dict[str, list[float]] = {k: [] for k in loops}
    for fn in loops.values():  # warm-up
        rate(fn, min(n, 10))
    for _ in range(args.rounds):
        for name, fn in loops.items():
            results[name].append(rate(fn, n * args.epochs))
    print(f"{n} images ({args.root} {args.set}), {args.rounds} rounds x {n * args.epochs} "
          f"images, cv2 threads {args.cv2_threads}; {platform.processor() or platform.machine()}")
    for name, rs in results.items():
        print(f"  {name:42s} {statistics.median(rs):7.1f} images/s "
              f"(min {min(rs):.1f}, max {max(rs):.1f})")
    for what in ("loading+augmentation", "augmentation only"):
        r = (statistics.median(results[f"ours, {what}"])
             / statistics.median(results[f"float32 baseline, {what}"]))
        print(f"  speed-up, {what}: {r:.2f}x")


if __name__ == "__main__":
    main()
