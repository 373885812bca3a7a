"""The CUDA paths: mixed-precision training steps, channels-last, Detect / MultiBoxLoss /
evaluation on the GPU against the CPU, and torchrun with NCCL. Skipped without CUDA;
``benchmarks/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd import build_ssd
from ssd.detection import detect
from ssd.loss import MultiBoxLoss

REPO = Path(__file__).resolve().parents[1]
VOC = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _batch(n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, 300, 300, generator=g) * 255 - 117
    targets = [torch.tensor([[0.1, 0.1, 0.5, 0.6, 3.0], [0.4, 0.3, 0.9, 0.9, 11.0]])
               for _ in range(n)]
    return images, targets


def _train_steps(dtype: torch.dtype | None, steps: int = 4) -> list[float]:
    torch.manual_seed(0)
    model = build_ssd("train", 300, 21).cuda().to(memory_format=torch.channels_last)
    criterion = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    images, targets = _batch()
    images = images.cuda().contiguous(memory_format=torch.channels_last)
    targets = [t.cuda() for t in targets]
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loc, conf, priors = model(images)
            if dtype is not None:
                assert conf.dtype == dtype
        loss_l, loss_c = criterion((loc.float(), conf.float(), priors), targets)
        scaler.scale(loss_l + loss_c).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss_l + loss_c))
    return losses


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16],
                         ids=["fp32", "bf16", "fp16-gradscaler"])
def test_training_steps_lower_the_loss(dtype):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    losses = _train_steps(dtype)
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def test_channels_last_forward_matches_contiguous_and_cpu():
    torch.manual_seed(0)
    model = build_ssd("train", 300, 21).eval()
    images, _ = _batch(2)
    with torch.no_grad():
        cpu = model(images)
        gpu = copy.deepcopy(model).cuda()
        plain = gpu(images.cuda())
        gpu.to(memory_format=torch.channels_last)
        cl = gpu(images.cuda().contiguous(memory_format=torch.channels_last))
    for a, b, c in zip(cpu[:2], plain[:2], cl[:2]):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(c.cpu(), a, rtol=1e-3, atol=1e-3)


def test_detect_on_cuda_equals_cpu():
    from ssd.config import get_config
    from ssd.priors import prior_boxes

    priors = prior_boxes(get_config("voc300"))
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.7
    conf = torch.softmax(torch.randn(2, priors.shape[0], 21, generator=g) * 2.5, dim=-1)
    cpu = detect(loc, conf, priors, 21, max_per_image=100)
    gpu = detect(loc.cuda(), conf.cuda(), priors.cuda(), 21, max_per_image=100)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)


def test_multibox_loss_on_cuda_equals_cpu():
    torch.manual_seed(0)
    criterion = MultiBoxLoss(21, 0.5, True, 0, True, 3, 0.5, False)
    g = torch.Generator().manual_seed(2)
    loc = torch.randn(2, 8732, 4, generator=g)
    conf = torch.randn(2, 8732, 21, generator=g)
    from ssd.config import get_config
    from ssd.priors import prior_boxes

    priors = prior_boxes(get_config("voc300"))
    _, targets = _batch(2)
    cpu = criterion((loc, conf, priors), targets)
    gpu = criterion((loc.cuda(), conf.cuda(), priors.cuda()), [t.cuda() for t in targets])
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


def test_evaluation_on_cuda_matches_cpu(tmp_path):
    from ssd.data import BaseTransform, VOCDetection
    from ssd.evaluation.inference import run_inference

    dataset = VOCDetection(str(VOC), [("2007", "trainval")], BaseTransform(300))
    dataset.ids = dataset.ids[:4]
    torch.manual_seed(0)
    model = build_ssd("test", 300, 21)
    with torch.no_grad():
        for head in model.conf:
            head.bias.normal_(0.0, 1.5)
    cpu = run_inference(copy.deepcopy(model), dataset, device="cpu", progress=False)
    gpu = run_inference(model, dataset, device="cuda", progress=False, channels_last=True)
    assert gpu.device.startswith("cuda")
    for c in range(1, 21):
        for i in range(4):
            a, b = cpu.all_boxes[c][i], gpu.all_boxes[c][i]
            # the best detections agree (lower ranks may swap on float noise)
            top = min(len(a), len(b), 10)
            np.testing.assert_allclose(b[:top, 4], a[:top, 4], rtol=1e-3, atol=1e-4)


def test_torchrun_nccl(tmp_path):
    n = min(2, torch.cuda.device_count())
    out = tmp_path / "w"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={n}", str(REPO / "train.py"), "--dataset_root", str(VOC.parent),
           "--train_sets", "2007:trainval", "--basenet", "none", "--batch_size", "4",
           "--num_workers", "2", "--device", "cuda", "--max_iter", "4", "--log_every", "1",
           "--checkpoint_every", "0", "--no_progress", "--seed", "0", "--save_folder", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "VOC.pth").is_file()
    from ssd.training.checkpoint import load_checkpoint

    ck = load_checkpoint(out / "ssd300_VOC_4.ckpt")
    assert ck["world_size"] == n
