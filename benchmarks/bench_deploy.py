"""Deployment speed and bf16 drift: PyTorch fp32 vs bf16 autocast vs ONNX Runtime.

Run: ``python benchmarks/bench_deploy.py [--batch 1 8] [--rounds 2] [--images 4]
[--json out.json]``. Times SSD300 from the pre-processed batch to ``scores`` + ``boxes``
(network, softmax, decode; NMS is the same NumPy/torch code for all three and left out):
PyTorch fp32 (channels-last), PyTorch bf16 autocast (channels-last) and the exported ONNX graph
in ONNX Runtime. Rounds alternate the three, so a change in machine load hits all alike; the
median of the rounds is reported with the load average (``/proc/loadavg``) before and after.
bf16 runs even where the CPU lacks native bf16 (then it is emulated: the speed shows why
``precision='auto'`` falls back to fp32 there).

Drift: ``Detector`` fp32 vs bf16 on the bundled VOC sample images, threshold 0.5: detections
matched one-to-one (same class, IoU >= 0.5, greedy by score), their score and box differences,
and the detections only one of them has. The weights are fixed random ones with spread-out
scores (no trained checkpoint is bundled), so the drift shows bf16's numeric effect, not a
trained model's accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007" / "JPEGImages"


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def deterministic_ssd() -> torch.nn.Module:
    from ssd import build_ssd

    torch.manual_seed(0)
    model = build_ssd("test", 300, 21)
    with torch.no_grad():
        for head in model.conf:
            head.bias.normal_(0.0, 1.5)
    return model.eval()


def speed(model, batches, rounds: int) -> dict:
    import onnxruntime as ort

    from ssd.export import export_onnx
    from ssd.export.graph import ScoresBoxes

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ssd300.onnx")
        export_onnx(model, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    net = ScoresBoxes(copy.deepcopy(model)).eval().to(memory_format=torch.channels_last)

    def torch_run(x, bf16):
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            net(x)

    results = {}
    for batch in batches:
        x = torch.randn(batch, 3, 300, 300) * 50
        runs = {"fp32": lambda x=x: torch_run(x, False), "bf16": lambda x=x: torch_run(x, True),
                "onnxruntime": lambda x=x: session.run(None, {"images": x.numpy()})}
        if batch == batches[0]:  # warm-up once (emulated bf16 takes ~1 min per batch of 8)
            for fn in runs.values():
                fn()
        times = {k: [] for k in runs}
        for _ in range(rounds):
            for k, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        results[batch] = {k: {"median_s": statistics.median(v), "images_per_s":
                              batch / statistics.median(v), "runs_s": v}
                          for k, v in times.items()}
        print(f"batch {batch}: " + ", ".join(
            f"{k} {r['images_per_s']:.2f} img/s" for k, r in results[batch].items()),
            f"(load {load()})", flush=True)
    return results


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def drift(model, n_images: int) -> dict:
    from ssd import Detector

    names = [f"c{i}" for i in range(20)]
    paths = [str(p) for p in sorted(IMAGES.glob("*.jpg"))[:n_images]]
    fp32 = Detector(copy.deepcopy(model), names, "cpu").predict(paths, threshold=0.5)
    det = Detector(copy.deepcopy(model), names, "cpu")
    det.precision = "bf16"  # forced, also where the CPU would fall back to fp32
    bf16 = det.predict(paths, threshold=0.5)
    score_d, box_d, matched, lost, gained = [], [], 0, 0, 0
    for a, b in zip(fp32, bf16):
        used = np.zeros(len(b), bool)
        iou = _iou(a.boxes, b.boxes) if len(a) and len(b) else np.zeros((len(a), len(b)))
        for i in range(len(a)):  # a is sorted best first
            ok = (b.labels == a.labels[i]) & ~used & (iou[i] >= 0.5) if len(b) else []
            if len(b) and ok.any():
                j = int(np.argmax(np.where(ok, iou[i], -1)))
                used[j] = True
                matched += 1
                score_d.append(abs(float(a.scores[i] - b.scores[j])))
                box_d.append(float(np.abs(a.boxes[i] - b.boxes[j]).max()))
            else:
                lost += 1
        gained += int((~used).sum())
    total = sum(len(r) for r in fp32)
    return {"images": len(paths), "fp32_detections": total, "matched": matched,
            "lost": lost, "gained": gained,
            "score_diff_mean": float(np.mean(score_d)), "score_diff_max": float(np.max(score_d)),
            "box_diff_px_mean": float(np.mean(box_d)), "box_diff_px_max": float(np.max(box_d))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--json", default=None)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-drift", action="store_true")
    args = p.parse_args()
    from ssd.precision import cpu_flags, native_bf16

    info = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "native_bf16": native_bf16("cpu"),
            "bf16_flags": sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "bf16"}),
            "load_before": load()}
    print(info, flush=True)
    model = deterministic_ssd()
    out = {"machine": info}
    if not args.skip_speed:
        out["speed"] = speed(model, args.batch, args.rounds)
    if not args.skip_drift:
        out["drift"] = drift(model, args.images)
        print(json.dumps(out["drift"], indent=1))
    out["machine"]["load_after"] = load()
    print("load after:", out["machine"]["load_after"])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
