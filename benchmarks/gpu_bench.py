"""GPU training and inference speed of SSD300 (run by ``benchmarks/gpu_check.sh``).

Training images/s at batch 32 in fp32, bf16 autocast and fp16 autocast with a GradScaler,
channels-last, fed two ways: the real data pipeline (VOC sample images, SSD augmentation,
DataLoader workers) and synthetic batches already in GPU memory, so a data-loading bottleneck
shows as the gap between the two. Inference images/s (network + Detect) at batch 1, 8, 32.
Writes one JSON results file.

``--dry-run`` runs every step on the CPU at batch 1 with one timed iteration and no autocast,
GradScaler or CUDA synchronisation (the real pipeline only in the first mode): it checks the
script, not the speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"
MODES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Setup:
    """Where and how big: the real settings, or the CPU dry run's."""

    def __init__(self, dry_run: bool, train_batch: int, train_iters: int,
                 infer_batches: list[int], infer_iters: int, workers: int) -> None:
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.train_batch = 1 if dry_run else train_batch
        self.train_iters = 1 if dry_run else train_iters
        self.warmup = 0 if dry_run else 3
        self.infer_batches = [1] * len(infer_batches) if dry_run else infer_batches
        self.infer_iters = 1 if dry_run else infer_iters
        self.workers = 0 if dry_run else workers

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def autocast(self, mode: str) -> contextlib.AbstractContextManager:
        dtype = MODES[mode]
        if dtype is None or self.dry_run:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    def scaler(self, mode: str) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type,
                                    enabled=mode == "fp16" and not self.dry_run)


def _model(setup: Setup, phase: str) -> torch.nn.Module:
    from ssd import build_ssd

    torch.manual_seed(0)
    model = build_ssd(phase, 300, 21).to(setup.device)
    return model.to(memory_format=torch.channels_last)


def real_batches(setup: Setup) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    from ssd.data import SSDAugmentation, VOCDetection, build_train_loader

    dataset = VOCDetection(str(VOC), [("2007", "trainval")], SSDAugmentation(300))
    while True:
        loader = build_train_loader(dataset, setup.train_batch, num_workers=setup.workers,
                                    seed=0, pin_memory=setup.device.type == "cuda")
        yield from loader


def synthetic_batches(setup: Setup) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(setup.train_batch, 3, 300, 300, generator=g) * 255 - 117)
    images = images.to(setup.device)
    targets = [torch.tensor([[0.1, 0.1, 0.5, 0.6, 3.0], [0.4, 0.3, 0.9, 0.9, 11.0]],
                            device=setup.device) for _ in range(setup.train_batch)]
    while True:
        yield images, targets


def train_speed(setup: Setup, mode: str,
                batches: Callable[[Setup], Iterator[Any]]) -> dict[str, float]:
    from ssd.loss import MultiBoxLoss

    model = _model(setup, "train").train()
    criterion = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = setup.scaler(mode)
    data = batches(setup)
    losses = []
    start = 0.0
    for it in range(setup.warmup + setup.train_iters):
        if it == setup.warmup:
            setup.sync()
            start = time.perf_counter()
        images, targets = next(data)
        images = images.to(setup.device, non_blocking=True).contiguous(
            memory_format=torch.channels_last)
        targets = [t.to(setup.device, non_blocking=True) for t in targets]
        optimizer.zero_grad(set_to_none=True)
        with setup.autocast(mode):
            loc, conf, priors = model(images)
        loss_l, loss_c = criterion((loc.float(), conf.float(), priors), targets)
        scaler.scale(loss_l + loss_c).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float((loss_l + loss_c).detach()))
    setup.sync()
    seconds = time.perf_counter() - start
    images_done = setup.train_batch * setup.train_iters
    return {"images_per_s": images_done / seconds, "seconds": seconds,
            "iterations": setup.train_iters, "last_loss": losses[-1]}


def infer_speed(setup: Setup, batch: int) -> dict[str, float]:
    model = _model(setup, "test").eval()
    images = torch.randn(batch, 3, 300, 300, device=setup.device).contiguous(
        memory_format=torch.channels_last) * 50
    with torch.inference_mode():
        for _ in range(setup.warmup):
            model(images)
        setup.sync()
        start = time.perf_counter()
        for _ in range(setup.infer_iters):
            model(images)
        setup.sync()
    seconds = time.perf_counter() - start
    return {"images_per_s": batch * setup.infer_iters / seconds, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="results JSON file")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, batch 1, one iteration, no CUDA calls (checks the script)")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-iters", type=int, default=20)
    p.add_argument("--infer-batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--infer-iters", type=int, default=20)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    args = p.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        p.error("no CUDA device here (use --dry-run to check the script on the CPU)")
    setup = Setup(args.dry_run, args.train_batch, args.train_iters, args.infer_batches,
                  args.infer_iters, args.workers)
    if not args.dry_run:
        torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {
        "dry_run": args.dry_run, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if not args.dry_run else "cpu (dry run)",
        "train_batch": setup.train_batch, "train": {}, "inference": {},
    }
    for source, batches in (("synthetic", synthetic_batches), ("real_pipeline", real_batches)):
        for mode in args.modes:
            if args.dry_run and source == "real_pipeline" and mode != args.modes[0]:
                continue  # same code as the first mode without autocast: spare the CPU
            r = train_speed(setup, mode, batches)
            results["train"][f"{mode}/{source}"] = r
            print(f"train {mode:4s} {source:13s} {r['images_per_s']:8.1f} img/s "
                  f"(loss {r['last_loss']:.3f})", flush=True)
    for requested, batch in zip(args.infer_batches, setup.infer_batches):
        r = infer_speed(setup, batch)
        results["inference"][f"batch{requested}"] = r
        print(f"inference batch {requested:3d} {r['images_per_s']:8.1f} img/s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
