"""Training building blocks, fast: LR schedule, flags, checkpoint files, RNG, sampler, logs."""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ssd.data import COCO_ROOT, VOC_ROOT
from ssd.training.args import parse_args, parse_train_sets, str2bool
from ssd.training.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    NonFiniteWeightsError,
    capture_rng,
    checkpoint_path,
    final_weights_path,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    restore_rng,
    run_prefix,
    weights_path,
)
from ssd.training.distributed import env_dist_info, pick_backend
from ssd.training.metrics import MetricsLog, read_metrics
from ssd.training.sampler import EpochLoader, ResumableSampler
from ssd.training.schedule import MultiStepWarmup, parse_steps

# ----------------------------------------------------------------------------- LR schedule


def _ssd_pytorch_lrs(base, steps, gamma, n):
    """ssd.pytorch's loop: step_index grows when the iteration is in lr_steps."""
    out, step_index = [], 0
    for it in range(n):
        if it in steps:
            step_index += 1
        out.append(base * gamma ** step_index)
    return out


def test_multistep_matches_ssd_pytorch_loop():
    sched = MultiStepWarmup(1e-3, (3, 5, 9), gamma=0.1)
    assert [sched(i) for i in range(12)] == pytest.approx(
        _ssd_pytorch_lrs(1e-3, (3, 5, 9), 0.1, 12), rel=1e-12)


def test_multistep_voc_defaults_by_hand():
    sched = MultiStepWarmup(1e-3, (80000, 100000, 120000), 0.1)
    assert sched(0) == pytest.approx(1e-3)
    assert sched(79999) == pytest.approx(1e-3)
    assert sched(80000) == pytest.approx(1e-4)
    assert sched(99999) == pytest.approx(1e-4)
    assert sched(100000) == pytest.approx(1e-5)
    assert sched(119999) == pytest.approx(1e-5)
    assert sched(120000) == pytest.approx(1e-6)


def test_linear_warmup_by_hand():
    sched = MultiStepWarmup(1.0, (), warmup_iters=4, warmup_factor=0.25)
    # factor + (1 - factor) * it / 4
    assert [sched(i) for i in range(6)] == pytest.approx(
        [0.25, 0.4375, 0.625, 0.8125, 1.0, 1.0])


def test_warmup_and_decay_combine():
    sched = MultiStepWarmup(1.0, (2,), gamma=0.1, warmup_iters=4, warmup_factor=0.5)
    assert sched(1) == pytest.approx(0.625)  # 0.5 + 0.5 * 1/4
    assert sched(2) == pytest.approx(0.1 * 0.75)  # decayed once, warm-up 0.5 + 0.5 * 2/4
    assert sched(4) == pytest.approx(0.1)


def test_schedule_state_roundtrip_and_validation():
    sched = MultiStepWarmup(0.01, (10, 20), 0.5, 3, 0.1)
    assert MultiStepWarmup.from_state_dict(sched.state_dict()) == sched
    with pytest.raises(ValueError, match="learning rate"):
        MultiStepWarmup(0.0)
    with pytest.raises(ValueError, match="increasing"):
        MultiStepWarmup(0.1, (20, 10))
    assert parse_steps("80000, 100000") == (80000, 100000)
    assert parse_steps("none") == ()
    with pytest.raises(ValueError, match="lr_steps"):
        parse_steps("1,x")


# ----------------------------------------------------------------------------- flags


def test_defaults_are_ssd_pytorch_ones():
    a = parse_args([])
    assert (a.dataset, a.batch_size, a.num_workers, a.lr, a.momentum, a.weight_decay,
            a.gamma, a.save_folder, a.basenet, a.resume, a.start_iter, a.visdom) == (
        "VOC", 32, 4, 1e-3, 0.9, 5e-4, 0.1, "weights/", "vgg16_reducedfc.pth", None, 0, False)
    assert a.dataset_root == VOC_ROOT
    assert a.train_sets_parsed == [("2007", "trainval"), ("2012", "trainval")]
    assert a.config == "voc300" and a.device == "auto" and a.amp == "off"


def test_dashed_spellings_are_aliases():
    under = parse_args(["--batch_size", "4", "--num_workers", "0", "--lr", "0.01",
                        "--weight_decay", "0", "--save_folder", "x", "--max_iter", "5",
                        "--lr_steps", "2,4", "--warmup_iters", "2", "--checkpoint_every", "3"])
    dashed = parse_args(["--batch-size", "4", "--num-workers", "0", "--learning-rate", "0.01",
                         "--weight-decay", "0", "--save-folder", "x", "--max-iter", "5",
                         "--lr-steps", "2,4", "--warmup-iters", "2", "--checkpoint-every", "3"])
    assert vars(under) == vars(dashed)
    assert under.lr_steps == (2, 4)


def test_legacy_cuda_and_visdom_booleans():
    assert parse_args(["--cuda", "False"]).device == "cpu"
    assert parse_args(["--cuda", "True"]).device == "cuda"
    assert parse_args(["--visdom"]).visdom is True
    assert parse_args(["--visdom", "True"]).visdom is True
    assert parse_args(["--visdom", "false"]).visdom is False
    assert str2bool("yes") and not str2bool("0")


def test_coco_defaults():
    a = parse_args(["--dataset", "COCO"])
    assert a.dataset_root == COCO_ROOT and a.train_sets_parsed == ["train2017"]
    assert a.config == "coco300"


@pytest.mark.parametrize("argv, words", [
    (["--batch_size", "0"], ["--batch_size", "positive"]),
    (["--lr", "-1"], ["--lr", "> 0"]),
    (["--cuda", "maybe"], ["--cuda", "boolean"]),
    (["--cuda", "True", "--device", "cpu"], ["contradicts"]),
    (["--device", "tpu9"], ["--device", "tpu9"]),
    (["--amp", "fp16", "--device", "cpu"], ["fp16", "bf16"]),
    (["--train_sets", "2007"], ["2007", "YEAR:LIST"]),
    (["--lr_steps", "10,5"], ["increasing"]),
    (["--config", "voc600"], ["--config", "voc600"]),
    (["--classes", "x.txt", "--dataset", "COCO"], ["--classes"]),
])
def test_bad_flags_exit_2_naming_the_problem(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_parse_train_sets():
    assert parse_train_sets("2007:trainval,2012:val", "VOC") == [("2007", "trainval"),
                                                                  ("2012", "val")]
    assert parse_train_sets("train2017,val2017", "COCO") == ["train2017", "val2017"]
    with pytest.raises(ValueError):
        parse_train_sets(" , ", "VOC")


# ----------------------------------------------------------------------------- RNG states


def _draw():
    return (random.random(), float(np.random.rand()), float(torch.rand(())))


def test_rng_capture_restore_roundtrip_through_weights_only_file():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()
    state = capture_rng()
    expected = [_draw() for _ in range(3)]
    buf = io.BytesIO()
    torch.save({"rng": state}, buf)
    buf.seek(0)
    loaded = torch.load(buf, map_location="cpu", weights_only=True)["rng"]
    _draw()
    restore_rng(loaded)
    assert [_draw() for _ in range(3)] == expected


# ----------------------------------------------------------------------------- checkpoint files


def test_file_names_follow_ssd_pytorch(tmp_path):
    assert run_prefix(300, "VOC") == "ssd300_VOC"
    assert weights_path(tmp_path, "ssd300_VOC", 5000) == tmp_path / "ssd300_VOC_5000.pth"
    assert checkpoint_path(tmp_path, "ssd300_VOC", 5000) == tmp_path / "ssd300_VOC_5000.ckpt"
    assert final_weights_path(tmp_path, "VOC", 300) == tmp_path / "VOC.pth"
    assert final_weights_path(tmp_path, "COCO", 512) == tmp_path / "COCO512.pth"


def _touch(path: Path, mtime: int) -> None:
    path.write_bytes(b"x")
    os.utime(path, ns=(mtime, mtime))


def test_latest_is_most_recent_and_prune_keeps_newest(tmp_path):
    _touch(tmp_path / "ssd300_VOC_10.ckpt", 1_000)
    _touch(tmp_path / "ssd300_VOC_4.ckpt", 3_000)  # resumed from an older one: newer file
    _touch(tmp_path / "ssd300_VOC_2.ckpt", 500)
    _touch(tmp_path / "ssd512_VOC_99.ckpt", 9_000)  # another run's
    _touch(tmp_path / "ssd300_VOC_7.pth", 9_000)  # not a training checkpoint
    assert find_latest_checkpoint(tmp_path, "ssd300_VOC") == tmp_path / "ssd300_VOC_4.ckpt"
    assert find_latest_checkpoint(tmp_path / "missing", "ssd300_VOC") is None
    removed = prune_checkpoints(tmp_path, "ssd300_VOC", keep=2)
    assert removed == [tmp_path / "ssd300_VOC_2.ckpt"]
    assert [p.name for p, _ in list_checkpoints(tmp_path, "ssd300_VOC")] == [
        "ssd300_VOC_10.ckpt", "ssd300_VOC_4.ckpt"]
    assert (tmp_path / "ssd512_VOC_99.ckpt").exists()
    assert prune_checkpoints(tmp_path, "ssd300_VOC", keep=0) == []


def test_load_checkpoint_errors_name_the_file(tmp_path):
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_checkpoint(bad)
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_checkpoint(plain)
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_writer_writes_all_files_and_refuses_nan(tmp_path):
    model = torch.nn.Linear(3, 2)
    writer = CheckpointWriter(tmp_path, "ssd300_VOC", "VOC", 300, keep=2,
                              extra={"config": {"num_classes": 3}})
    for it in (1, 2, 3):
        writer({"model": model.state_dict(), "iteration": it}, it, final=it == 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["VOC.pth", "ssd300_VOC_1.pth", "ssd300_VOC_2.ckpt", "ssd300_VOC_2.pth",
                     "ssd300_VOC_3.ckpt", "ssd300_VOC_3.pth"]
    ck = load_checkpoint(tmp_path / "ssd300_VOC_3.ckpt")
    assert ck["iteration"] == 3 and ck["config"] == {"num_classes": 3}
    plain = torch.load(tmp_path / "VOC.pth", map_location="cpu", weights_only=True)
    assert set(plain) == {"weight", "bias"}

    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="weight"):
        writer({"model": model.state_dict(), "iteration": 4}, 4, final=True)
    assert not (tmp_path / "ssd300_VOC_4.ckpt").exists()
    assert not (tmp_path / "ssd300_VOC_4.pth").exists()
    assert torch.isfinite(torch.load(tmp_path / "VOC.pth", weights_only=True)["weight"]).all()


# ----------------------------------------------------------------------------- sampler


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def test_sampler_order_is_a_function_of_seed_and_epoch_and_can_start_late():
    s1, s2 = ResumableSampler(_Items(10), seed=5), ResumableSampler(_Items(10), seed=5)
    s1.set_epoch(3)
    full = list(s1)
    s2.set_epoch(3, start=4)
    assert list(s2) == full[4:] and len(s2) == 6
    assert sorted(full) == list(range(10))
    s1.set_epoch(4)
    assert list(s1) != full


def test_sampler_shards_across_processes():
    ranks = [ResumableSampler(_Items(7), num_replicas=2, rank=r, seed=0) for r in range(2)]
    for r in ranks:
        r.set_epoch(1)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 4  # padded to an equal count
    assert set(a) | set(b) == set(range(7))


def _epoch_loader(n=5, batch=2, seed=0):
    ds = _Items(n)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch,
                                         sampler=ResumableSampler(ds, seed=seed),
                                         generator=torch.Generator())
    return EpochLoader(loader, seed=seed)


def test_epoch_loader_restarts_anywhere_in_the_stream():
    el = _epoch_loader()
    assert el.batches_per_epoch == 3
    stream = el.batches()
    ref = [(e, b, x.tolist()) for e, b, x in (next(stream) for _ in range(9))]
    assert [(e, b) for e, b, _ in ref] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                           (2, 0), (2, 1), (2, 2)]
    assert sorted(sum((x for e, _, x in ref if e == 1), [])) == list(range(5))
    for start in (1, 3, 4, 5):
        e0, b0 = ref[start][:2]
        s = _epoch_loader().batches(e0, b0)
        assert [(e, b, x.tolist()) for e, b, x in (next(s) for _ in range(9 - start))] == \
            ref[start:]


# ----------------------------------------------------------------------------- logs, env


def test_metrics_log_appends_json_lines_and_skips_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    with MetricsLog(path) as m:
        m.write({"type": "train", "iter": 1, "loss": 2.5})
        m.write({"type": "nonfinite", "iter": 2, "loss": float("nan"),
                 "t": torch.tensor(1.5)})
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"type": "tr')  # a run killed mid-write
    recs = read_metrics(path)
    assert [r["iter"] for r in recs] == [1, 2]
    assert recs[1]["loss"] == "nan" and recs[1]["t"] == 1.5
    json.loads(path.read_text().splitlines()[0])


def test_env_dist_info(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = env_dist_info()
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_dist_info()
    assert (info.rank, info.local_rank, info.world_size, info.is_main) == (3, 1, 4, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK"):
        env_dist_info()
    assert pick_backend(torch.device("cpu")) == "gloo"
    assert pick_backend(torch.device("cuda", 0)) == "nccl"
