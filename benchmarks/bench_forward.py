"""Time the SSD forward pass (train phase: network only; test phase: network + Detect).

Run: ``python benchmarks/bench_forward.py [--device cuda] [--batch 1 8] [--runs 5]
[--size 300] [--channels-last] [--threads N]``. Prints the median wall time of several
runs after warm-up, under ``torch.inference_mode``. Beside ours, the same modules run the way
ssd.pytorch's forward did, interleaved run by run, as a baseline that sees the same machine load.

The weights are random, so nearly every prior clears Detect's 0.01 threshold for every class:
the test-phase numbers are the worst case for NMS (a trained net leaves far fewer candidates).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ssd.model import build_ssd


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved_medians(fns, device: torch.device, runs: int, warmup: int = 1) -> list[float]:
    """Median seconds of each function, runs alternating so load changes hit all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            ts.append(_time(fn, device))
    return [statistics.median(ts) for ts in times]


def legacy_train_forward(m, x: torch.Tensor):
    """The network as ssd.pytorch ran it (module slices, permute + contiguous + view per head,
    functional ReLUs), on our modules: the baseline for the train-phase timing."""
    sources = []
    for k in range(23):
        x = m.vgg[k](x)
    sources.append(m.L2Norm(x))
    for k in range(23, len(m.vgg)):
        x = m.vgg[k](x)
    sources.append(x)
    for k, v in enumerate(m.extras):
        x = torch.relu(v(x))
        if k % 2 == 1:
            sources.append(x)
    loc, conf = [], []
    for s, lh, ch in zip(sources, m.loc, m.conf):
        loc.append(lh(s).permute(0, 2, 3, 1).contiguous())
        conf.append(ch(s).permute(0, 2, 3, 1).contiguous())
    loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
    conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
    return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, m.num_classes), m.priors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=300, choices=(300, 512))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true",
                        help="model weights and inputs in channels_last memory format")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_ssd("train", args.size).to(device).eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {device}, SSD{args.size}, "
          f"{'channels_last' if args.channels_last else 'contiguous'}, median of {args.runs}")
    for batch in args.batch:
        x = (torch.randn(batch, 3, args.size, args.size) * 50).to(device)
        x = x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            model.set_phase("train")
            train, legacy = interleaved_medians(
                [lambda x=x: model(x), lambda x=x: legacy_train_forward(model, x)],
                device, args.runs)
            model.set_phase("test")
            (test,) = interleaved_medians([lambda x=x: model(x)], device, args.runs)
        for name, t in (("train phase", train), ("test phase", test),
                        ("legacy-style train", legacy)):
            print(f"  batch {batch:2d}  {name:18s} forward: {t * 1000:8.1f} ms"
                  f"  ({t * 1000 / batch:6.1f} ms/image)")


if __name__ == "__main__":
    main()
