"""Time one SSD300 training iteration: our Trainer step against a bare ssd.pytorch-style step.

Run: ``python benchmarks/bench_train.py [--device cuda] [--batch 2] [--runs 3] [--amp bf16]
[--channels-last]``. Both steps run forward, MultiBoxLoss, backward and an SGD step on the same
random batch; ours adds what train.py does per iteration (loss finiteness check through one
reduction, gradient-norm computation, per-iteration LR from the schedule). Runs alternate so
that load changes hit both alike; prints the median seconds per iteration and images/s.

For the CPU, run it with and without ``MKL_CBWR=AUTO,STRICT`` in the environment (train.py
sets it for bit-exact resumption) to see what reproducible MKL costs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from ssd.loss import MultiBoxLoss
from ssd.model import build_ssd
from ssd.training.engine import Trainer
from ssd.training.schedule import MultiStepWarmup, set_lr


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _NoData:
    batch_size = 1
    batches_per_epoch = 1
    seed = 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    model = build_ssd("train", 300, 21).to(device)
    if a.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    crit = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False, device.type == "cuda")
    images = torch.randn(a.batch, 3, 300, 300)
    g = torch.Generator().manual_seed(1)
    targets = []
    for _ in range(a.batch):
        xy = torch.rand(3, 2, generator=g) * 0.6
        wh = torch.rand(3, 2, generator=g) * 0.3 + 0.05
        labels = torch.randint(0, 20, (3, 1), generator=g).float()
        targets.append(torch.cat([xy, xy + wh, labels], 1))
    scaler = torch.amp.GradScaler("cuda") if a.amp == "fp16" else None
    trainer = Trainer(model, crit, opt, _NoData(), MultiStepWarmup(1e-4), max_iter=1,
                      device=device, amp=a.amp, scaler=scaler,
                      channels_last=a.channels_last, progress=False)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.amp)

    def ours() -> None:
        set_lr(opt, trainer.schedule(0))
        trainer.train_step(images, targets)

    def bare() -> None:
        x = images.to(device)
        if a.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = [tt.to(device) for tt in targets]
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x)
        loss_l, loss_c = crit(out, t)
        loss = loss_l + loss_c
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        loss.item()  # ssd.pytorch read the loss every iteration too

    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for fn in (ours, bare):  # warm-up (and cudnn.benchmark's search on CUDA)
        fn()
    for _ in range(a.runs):
        for name, fn in (("ours", ours), ("bare", bare)):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"device {device}, threads {torch.get_num_threads()}, batch {a.batch}, amp {a.amp}, "
          f"channels_last {a.channels_last}, MKL_CBWR={os.environ.get('MKL_CBWR', '(unset)')}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:5s} median {med:.3f} s/iteration ({a.batch / med:.2f} img/s) "
              f"runs {[round(t, 3) for t in ts]}")


if __name__ == "__main__":
    main()
