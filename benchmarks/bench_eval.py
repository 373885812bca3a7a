"""Time the evaluation pipeline end to end and by stage, against an ssd.pytorch-style loop.

Run: ``python benchmarks/bench_eval.py [--images 16] [--device cpu] [--workers 0 2]
[--trained_model PATH]``. Uses the VOC sample (``data/samples/voc_mini``, 2007 test).

Measured on the same images, chunk by chunk (8 images), every pipeline taking each chunk in
turn, so that they see the same machine load:

* ``ssd.pytorch-style``: what ssd.pytorch's ``eval.py`` did per image: batch 1, default
  (NCHW) memory format, train-phase forward + softmax, a Python greedy NMS per class
  (``baseline_detect`` of ``bench_loss_detect.py``), then the per-class numpy extraction.
* ours, batch 1: :func:`ssd.evaluation.run_inference` with one image per batch.
* ours, batch 8: the ``eval.py`` default (channels-last, vectorised ``detect``), with 0 and 2
  DataLoader workers.

Stage split of ours (batch 8): image loading + preprocessing, network forward, ``detect``, and
VOC scoring (writing the results files and reading them back, as ``eval.py`` does).

Random weights (the default) put nearly every prior above Detect's 0.01 threshold for every
class: the detect numbers are the worst case for NMS.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss_detect import baseline_detect  # noqa: E402

from ssd.data import BaseTransform, VOCDetection  # noqa: E402
from ssd.detection import detect  # noqa: E402
from ssd.evaluation.inference import EvalImages, collate_eval, run_inference  # noqa: E402
from ssd.evaluation.runner import evaluate_voc, voc_set  # noqa: E402
from ssd.model import build_ssd  # noqa: E402


def legacy_eval_loop(model, dataset, device) -> float:
    """ssd.pytorch's test_net loop shape: batch 1, Python NMS; returns seconds."""
    n = len(dataset)
    all_boxes = [[np.zeros((0, 5), np.float32)] * n for _ in range(model.num_classes)]
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(n):
            im, _, h, w = dataset.pull_item(i)
            loc, conf, priors = model(im.unsqueeze(0).to(device))
            dets = baseline_detect(loc, conf.softmax(-1), priors, model.num_classes)
            for j in range(1, dets.size(1)):
                d = dets[0, j]
                d = d[d[:, 0] > 0]
                if d.numel() == 0:
                    continue
                boxes = d[:, 1:].clone()
                boxes[:, 0::2] *= w
                boxes[:, 1::2] *= h
                all_boxes[j][i] = np.hstack((boxes.cpu().numpy(),
                                             d[:, 0:1].cpu().numpy())).astype(np.float32)
    return time.perf_counter() - start


def stage_split(model, dataset, device, batch_size: int) -> dict[str, float]:
    """Seconds per image of loading, forward and detect for ``eval.py``'s settings."""
    loader = torch.utils.data.DataLoader(EvalImages(dataset), batch_size=batch_size,
                                         collate_fn=collate_eval)
    t = time.perf_counter()
    batches = list(loader)
    load_s = time.perf_counter() - t
    model.to(memory_format=torch.channels_last)
    fwd_s = det_s = 0.0
    with torch.inference_mode():
        model(batches[0][0].to(device).contiguous(memory_format=torch.channels_last))  # warm-up
        for imgs, _, _ in batches:
            x = imgs.to(device).contiguous(memory_format=torch.channels_last)
            t = time.perf_counter()
            loc, conf, priors = model(x)
            t2 = time.perf_counter()
            detect(loc, conf.softmax(-1), priors, model.num_classes)
            det_s += time.perf_counter() - t2
            fwd_s += t2 - t
    model.to(memory_format=torch.contiguous_format)
    n = len(dataset)
    return {"load": load_s / n, "forward": fwd_s / n, "detect": det_s / n}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--trained_model", default=None)
    args = p.parse_args()
    device = torch.device(args.device)

    ds = VOCDetection(REPO / "data/samples/voc_mini/VOCdevkit", [("2007", "test")],
                      BaseTransform(300), keep_difficult=True)
    ds.ids = ds.ids[:args.images]
    n = len(ds)
    torch.manual_seed(0)
    model = build_ssd("train", 300, 21)
    if args.trained_model:
        model.load_weights(args.trained_model)
    model.to(device).eval()

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}, {n} VOC images, "
          f"{'trained' if args.trained_model else 'random'} weights")
    # Warm-up (allocator, oneDNN primitives).
    with torch.inference_mode():
        model(torch.zeros(1, 3, 300, 300, device=device))
    model_cl = build_ssd("train", 300, 21)
    model_cl.load_state_dict(model.state_dict())
    model_cl.to(device).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        model_cl(torch.zeros(1, 3, 300, 300, device=device)
                 .contiguous(memory_format=torch.channels_last))

    # Paired measurement: the images go in chunks of 8, and every pipeline processes each
    # chunk before the next chunk starts (in a rotating order), so that the load of a shared
    # machine hits all pipelines alike. Totals over all chunks are reported.
    pipelines = [
        ("ssd.pytorch-style loop (batch 1, NCHW, Python NMS)",
         lambda sub: legacy_eval_loop(model, sub, device)),
        ("ours, batch 1, NCHW",
         lambda sub: run_inference(model, sub, device=device, batch_size=1,
                                   progress=False).seconds),
    ]
    for w in args.workers:
        pipelines.append((
            f"ours, batch 8, channels-last, {w} workers (eval.py)",
            lambda sub, w=w: run_inference(model_cl, sub, device=device, batch_size=8,
                                           num_workers=w, channels_last=True,
                                           progress=False).seconds))
    totals = [0.0] * len(pipelines)
    for k, s0 in enumerate(range(0, n, 8)):
        sub = copy.copy(ds)
        sub.ids = ds.ids[s0:s0 + 8]
        order = list(range(len(pipelines)))
        order = order[k % len(order):] + order[:k % len(order)]
        for j in order:
            totals[j] += pipelines[j][1](sub)
    rows = [(name, t) for (name, _), t in zip(pipelines, totals)]
    all_boxes = run_inference(model_cl, ds, device=device, batch_size=8, channels_last=True,
                              progress=False).all_boxes
    base = rows[0][1]
    print("\n| pipeline | s/image | images/s | speed-up |\n|---|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs / n:.3f} | {n / secs:.2f} | {base / secs:.2f}x |")

    split = stage_split(build_ssd("train", 300, 21).to(device).eval(), ds, device, 8)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        evaluate_voc(voc_set(ds), all_boxes=all_boxes, results_dir=tmp, cachedir=tmp)
        ap_s = time.perf_counter() - t
    n_dets = sum(len(d) for per in all_boxes for d in per)
    print(f"\nStages of ours (batch 8), s/image: load+preprocess {split['load']:.3f}, "
          f"forward {split['forward']:.3f}, detect {split['detect']:.3f}; VOC scoring "
          f"{ap_s:.2f} s for {n_dets} detections ({ap_s / n:.3f} s/image)")


if __name__ == "__main__":
    main()
