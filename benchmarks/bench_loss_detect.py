"""Time MultiBoxLoss (forward + backward) and Detect on SSD300-sized tensors.

Run: ``python benchmarks/bench_loss_detect.py [--device cuda] [--runs 7] [--threads N]
[--baseline]``.
Prints the median and the best wall time of several runs after warm-up, in milliseconds.
``--baseline`` also times loop-based versions written here after ssd.pytorch's algorithm
(a matching call per image, global-max log-sum-exp, boolean-mask selections; a Python greedy
NMS per image and class), interleaved round by round with ours so that both see the same
machine load (at most 3 rounds for the slow Detect baseline).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ssd.box_utils import decode, match
from ssd.config import voc
from ssd.detection import detect
from ssd.loss import MultiBoxLoss
from ssd.priors import prior_boxes

VARIANCE = (0.1, 0.2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fns: list[Callable[[], object]], device: torch.device, runs: list[int],
          warmup: int = 1) -> list[tuple[float, float]]:
    """(median, best) wall time in ms of each ``fn()``, runs interleaved round by round so that
    all of them see the same machine load; ``runs[i]`` rounds for ``fns[i]``."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for round_ in range(max(runs)):
        for i, fn in enumerate(fns):
            if round_ >= runs[i]:
                continue
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[i].append((time.perf_counter() - start) * 1000)
    return [(statistics.median(t), min(t)) for t in times]


def random_targets(batch: int, gen: torch.Generator, max_objects: int = 10,
                   num_classes: int = 21) -> list[torch.Tensor]:
    """1..max_objects random boxes per image, sides 0.05..0.8 of the image, random labels."""
    targets = []
    for _ in range(batch):
        n = int(torch.randint(1, max_objects + 1, (1,), generator=gen))
        wh = 0.05 + 0.75 * torch.rand(n, 2, generator=gen)
        xy = torch.rand(n, 2, generator=gen) * (1 - wh)
        label = torch.randint(0, num_classes - 1, (n, 1), generator=gen).float()
        targets.append(torch.cat([xy, xy + wh, label], dim=1))
    return targets


# --- loop-based baselines (ssd.pytorch's algorithm) ----------------------------------------

def baseline_loss(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                  targets: list[torch.Tensor], num_classes: int) -> tuple[torch.Tensor, ...]:
    batch, n_priors = loc.shape[:2]
    loc_t = torch.zeros(batch, n_priors, 4, device=loc.device)
    conf_t = torch.zeros(batch, n_priors, dtype=torch.long, device=loc.device)
    for b, t in enumerate(targets):
        t = t.to(loc.device)
        match(0.5, t[:, :4], priors, VARIANCE, t[:, 4], loc_t, conf_t, b)
    pos = conf_t > 0
    loss_l = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    flat = conf.reshape(-1, num_classes)
    x_max = flat.detach().max()
    lse = torch.log(torch.sum(torch.exp(flat - x_max), 1, keepdim=True)) + x_max
    mining = (lse - flat.gather(1, conf_t.view(-1, 1))).detach()
    mining[pos.view(-1, 1)] = 0
    mining = mining.view(batch, -1)
    _, loss_idx = mining.sort(1, descending=True)
    _, idx_rank = loss_idx.sort(1)
    num_pos = pos.long().sum(1, keepdim=True)
    neg = idx_rank < torch.clamp(3 * num_pos, max=n_priors - 1)
    sel = pos | neg
    loss_c = F.cross_entropy(conf[sel], conf_t[sel], reduction="sum")
    n = num_pos.sum()
    return loss_l / n, loss_c / n


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, thresh: float,
                top_k: int) -> torch.Tensor:
    order = scores.argsort()[-top_k:]
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while order.numel() > 0:
        i = order[-1]
        keep.append(i)
        order = order[:-1]
        if order.numel() == 0:
            break
        w = (torch.minimum(x2[order], x2[i]) - torch.maximum(x1[order], x1[i])).clamp(min=0)
        h = (torch.minimum(y2[order], y2[i]) - torch.maximum(y1[order], y1[i])).clamp(min=0)
        inter = w * h
        iou = inter / (area[order] - inter + area[i])
        order = order[iou <= thresh]
    return torch.stack(keep)


def baseline_detect(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor,
                    num_classes: int, top_k: int = 200) -> torch.Tensor:
    batch = loc.size(0)
    out = torch.zeros(batch, num_classes, top_k, 5, device=loc.device)
    for b in range(batch):
        boxes = decode(loc[b], priors, VARIANCE)
        for c in range(1, num_classes):
            mask = conf[b, :, c] > 0.01
            scores = conf[b, :, c][mask]
            if scores.numel() == 0:
                continue
            cand = boxes[mask]
            keep = _greedy_nms(cand, scores, 0.45, top_k)
            out[b, c, :keep.numel()] = torch.cat([scores[keep, None], cand[keep]], 1)
    return out


# --- benchmarks ------------------------------------------------------------------------------

def loss_inputs(device: torch.device, batch: int = 32):
    gen = torch.Generator().manual_seed(0)
    priors = prior_boxes(voc, device)
    n_priors, n_cls = priors.size(0), voc["num_classes"]
    loc = torch.randn(batch, n_priors, 4, generator=gen).to(device).requires_grad_(True)
    conf = torch.randn(batch, n_priors, n_cls, generator=gen).to(device).requires_grad_(True)
    return loc, conf, priors, random_targets(batch, gen)


def detect_inputs(device: torch.device, peaked: bool, batch: int = 8):
    gen = torch.Generator().manual_seed(1)
    priors = prior_boxes(voc, device)
    n_priors, n_cls = priors.size(0), voc["num_classes"]
    loc = (0.5 * torch.randn(batch, n_priors, 4, generator=gen)).to(device)
    logits = torch.randn(batch, n_priors, n_cls, generator=gen)
    if peaked:
        # A trained-looking distribution: background dominates almost everywhere and about 3%
        # of the priors are confident about one class.
        logits[..., 0] += 8.0
        hot = torch.rand(batch, n_priors, generator=gen) < 0.03
        cls = torch.randint(1, n_cls, (batch, n_priors), generator=gen)
        logits.scatter_add_(2, cls[..., None], 12.0 * hot[..., None].float())
    return loc, logits.softmax(-1).to(device), priors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", action="store_true",
                        help="also time the loop-based (ssd.pytorch-style) versions")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.machine()}, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, device {device} ({where})")
    n_cls = voc["num_classes"]

    def report(name: str, fn: Callable[[], object], base: Callable[[], object],
               base_runs: int) -> None:
        fns, runs = [fn], [args.runs]
        if args.baseline:
            fns.append(base)
            runs.append(min(args.runs, base_runs))
        results = timed(fns, device, runs)
        print(f"{name:<46} median {results[0][0]:8.1f} ms   best {results[0][1]:8.1f} ms")
        if args.baseline:
            med, best = results[1]
            print(f"{'  loop baseline, same rounds':<46} median {med:8.1f} ms   best {best:8.1f} ms"
                  f"   (median ratio {med / results[0][0]:.1f}x)")

    loc, conf, priors, targets = loss_inputs(device)
    criterion = MultiBoxLoss(n_cls, 0.5, True, 0, True, 3, 0.5, False, device.type == "cuda")

    def loss_step(fn: Callable[[], tuple[torch.Tensor, ...]]) -> Callable[[], None]:
        def step() -> None:
            loss_l, loss_c = fn()
            (loss_l + loss_c).backward()
            loc.grad = None
            conf.grad = None
        return step

    report("MultiBoxLoss fwd+bwd, batch 32",
           loss_step(lambda: criterion((loc, conf, priors), targets)),
           loss_step(lambda: baseline_loss(loc, conf, priors, targets, n_cls)), args.runs)
    for peaked in (False, True):
        d_loc, d_conf, d_priors = detect_inputs(device, peaked)
        n_cand = int((d_conf[..., 1:] > 0.01).sum())
        label = "peaked scores" if peaked else "random logits"
        inputs = (d_loc, d_conf, d_priors, n_cls)
        report(f"Detect, batch 8, {label} ({n_cand} cand.)", lambda a=inputs: detect(*a),
               lambda a=inputs: baseline_detect(*a), 3)


if __name__ == "__main__":
    main()
