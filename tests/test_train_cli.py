"""train.py end to end on the bundled VOC sample (SSD300 on the CPU).

A CPU SSD300 step takes seconds, so runs use 1-3 image subsets of data/samples/voc_mini and a
handful of iterations; the longer ones are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from ssd.model import build_ssd, vgg
from ssd.training import main
from ssd.training.checkpoint import load_checkpoint
from ssd.training.metrics import read_metrics
from ssd.weights import load_ssd_weights

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007"
IDS = ["2007_000027", "2007_000032", "2007_000033"]


def _voc_subset(root: Path, ids: list[str], test_ids: tuple[str, ...] = ()) -> Path:
    """A VOCdevkit with only ``ids`` in VOC2007 trainval and ``test_ids`` in test (copies of
    the sample files)."""
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    for i in (*ids, *test_ids):
        shutil.copy(SAMPLE / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(SAMPLE / "Annotations" / f"{i}.xml", voc / "Annotations")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    if test_ids:
        (voc / "ImageSets" / "Main" / "test.txt").write_text("\n".join(test_ids) + "\n")
    return root


def _args(root: Path, folder: Path, *extra: str) -> list[str]:
    return ["--dataset_root", str(root), "--train_sets", "2007:trainval", "--basenet", "none",
            "--batch_size", "1", "--num_workers", "0", "--device", "cpu", "--log_every", "1",
            "--no_progress", "--seed", "0", "--save_folder", str(folder), *extra]


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *args]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited early ({proc.returncode}): "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- short runs

def test_from_scratch_writes_loadable_files_and_survives_no_visdom(tmp_path, capsys):
    # One image: every iteration ends an epoch. One test image for the --eval_every hook.
    root = _voc_subset(tmp_path / "data", IDS[:1], test_ids=(IDS[1],))
    out = tmp_path / "weights"
    code = _main(_args(root, out, "--max_iter", "2", "--checkpoint_every", "1", "--visdom",
                       "--visdom_port", str(_free_port()), "--eval_every", "2"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("visdom:") == 1 and "training goes on" in err  # one warning, no crash
    names = {p.name for p in out.iterdir()}
    assert {"ssd300_VOC_1.ckpt", "ssd300_VOC_2.ckpt", "ssd300_VOC_1.pth", "ssd300_VOC_2.pth",
            "VOC.pth", "ssd300_VOC_metrics.jsonl"} <= names
    assert f"weights (ssd.pytorch format): {out / 'VOC.pth'}" in err

    final = _load(out / "VOC.pth")
    assert _same_state(final, _load(out / "ssd300_VOC_2.pth"))
    load_ssd_weights(build_ssd("test", 300, 21), out / "VOC.pth")  # strict, ssd.pytorch layout
    ck = load_checkpoint(out / "ssd300_VOC_2.ckpt")
    assert (ck["iteration"], ck["epoch"], ck["batch_in_epoch"]) == (2, 2, 0)
    assert _same_state(ck["model"], final)
    assert ck["config"]["num_classes"] == 21 and ck["args"]["max_iter"] == 2
    assert len(ck["optimizer"]["state"]) == len(final)  # momentum for every parameter

    recs = read_metrics(out / "ssd300_VOC_metrics.jsonl")
    assert [r["type"] for r in recs] == ["start", "train", "epoch", "train", "epoch", "eval"]
    assert recs[-1]["iter"] == 2 and recs[-1]["num_images"] == 1 and "mAP" in recs[-1]
    train = [r for r in recs if r["type"] == "train"]
    assert [r["iter"] for r in train] == [1, 2] and all(r["loss"] > 0 for r in train)
    assert all(abs(r["loss"] - r["loss_l"] - r["loss_c"]) < 1e-4 for r in train)
    assert train[0]["lr"] == pytest.approx(1e-3)


def test_generated_basenet_file_is_loaded(tmp_path, capsys):
    root = _voc_subset(tmp_path / "data", IDS[:1])
    out = tmp_path / "weights"
    out.mkdir()
    torch.manual_seed(123)
    base = {k: v.clone() for k, v in torch.nn.ModuleList(vgg()).state_dict().items()}
    assert list(base)[0] == "0.weight" and list(base)[-1] == "33.bias"
    torch.save(base, out / "vgg16_reducedfc.pth")
    # A bare file name is looked for in --save_folder, as ssd.pytorch did.
    code = _main(_args(root, out, "--basenet", "vgg16_reducedfc.pth", "--max_iter", "1",
                       "--lr", "1e-9", "--weight_decay", "0"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "base network:" in err
    final = _load(out / "VOC.pth")
    for k, v in base.items():
        torch.testing.assert_close(final[f"vgg.{k}"], v, rtol=0, atol=1e-6)


def test_plain_state_dict_resume_with_start_iter(tmp_path, capsys):
    root = _voc_subset(tmp_path / "data", IDS[:1])
    out = tmp_path / "weights"
    torch.manual_seed(5)
    plain = build_ssd("train", 300, 21).state_dict()
    torch.save({f"module.{k}": v for k, v in plain.items()}, tmp_path / "old.pth")  # from DDP
    code = _main(_args(root, out, "--resume", str(tmp_path / "old.pth"), "--start_iter", "5",
                       "--max_iter", "6", "--lr", "1e-9", "--weight_decay", "0",
                       "--lr_steps", "5", "--gamma", "0.5"))
    err = capsys.readouterr().err
    assert code == 0, err
    ck = load_checkpoint(out / "ssd300_VOC_6.ckpt")
    assert ck["iteration"] == 6
    for k, v in plain.items():
        torch.testing.assert_close(ck["model"][k], v, rtol=0, atol=1e-6)
    train = [r for r in read_metrics(out / "ssd300_VOC_metrics.jsonl") if r["type"] == "train"]
    assert [r["iter"] for r in train] == [6] and train[0]["lr"] == pytest.approx(0.5e-9)


@pytest.mark.parametrize("case", ["root", "year", "basenet", "resume", "garbage", "cuda",
                                  "classes"])
def test_missing_or_bad_files_are_clear_errors(case, tmp_path, capsys):
    if case == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    root = _voc_subset(tmp_path / "data", IDS[:1])
    out = tmp_path / "weights"
    args = _args(root, out, "--max_iter", "1")
    expect: list[str]
    if case == "root":
        args[1] = str(tmp_path / "nowhere")
        expect = ["nowhere", "does not exist"]
    elif case == "year":
        args[3] = "2007:trainval,2012:trainval"
        expect = ["2012:trainval", "VOC2007: trainval"]
    elif case == "basenet":
        args += ["--basenet", "vgg16_reducedfc.pth"]
        expect = ["vgg16_reducedfc.pth", "convert-vgg16", "amdegroot-models"]
    elif case == "resume":
        args += ["--resume", str(tmp_path / "gone.ckpt")]
        expect = ["gone.ckpt", "no such file"]
    elif case == "garbage":
        (tmp_path / "bad.ckpt").write_bytes(b"\x00garbage")
        args += ["--resume", str(tmp_path / "bad.ckpt")]
        expect = ["bad.ckpt", "could not read"]
    elif case == "cuda":
        args += ["--device", "cuda"]
        expect = ["CUDA is not available", "--device cpu"]
    else:
        args += ["--classes", str(tmp_path / "no_classes.txt")]
        expect = ["no_classes.txt"]
    code = _main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "train.py: error:" in err and "Traceback" not in err
    for word in expect:
        assert word in err
    assert not out.exists() or not list(out.glob("*.ckpt"))


# ----------------------------------------------------------------------------- longer runs

@pytest.mark.slow
def test_visdom_plots_arrive_on_a_local_server(tmp_path, capsys):
    visdom = pytest.importorskip("visdom")
    port = _free_port()
    env_path = tmp_path / "visdom_env"
    env_path.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from visdom.server.run_server import main; "
                               "sys.argv = ['visdom'] + sys.argv[1:]; main()",
         "-port", str(port), "-env_path", str(env_path), "-bind_local",
         "-logging_level", "WARNING"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < end, "visdom did not start"
            time.sleep(0.1)
        root = _voc_subset(tmp_path / "data", IDS[:1])
        code = _main(_args(root, tmp_path / "w", "--max_iter", "2", "--checkpoint_every", "0",
                           "--visdom", "True", "--visdom_port", str(port),
                           "--visdom_env", "ssdtest"))
        err = capsys.readouterr().err
        assert code == 0, err
        assert "visdom:" not in err
        with warnings.catch_warnings():  # visdom's own Logger.warn call
            warnings.simplefilter("ignore", DeprecationWarning)
            vis = visdom.Visdom(port=port, env="ssdtest", use_incoming_socket=False,
                                raise_exceptions=True)
        it = json.loads(vis.get_window_data("ssd300_VOC_iteration_loss", "ssdtest"))
        ep = json.loads(vis.get_window_data("ssd300_VOC_epoch_loss", "ssdtest"))
        traces = it["content"]["data"]
        assert [t["name"] for t in traces] == ["Loc Loss", "Conf Loss", "Total Loss"]
        assert traces[0]["x"] == [1, 2]
        for i in range(2):
            assert traces[2]["y"][i] == pytest.approx(traces[0]["y"][i] + traces[1]["y"][i])
        assert ep["content"]["data"][2]["x"] == [0, 1]
        recs = read_metrics(tmp_path / "w" / "ssd300_VOC_metrics.jsonl")
        losses = [r["loss"] for r in recs if r["type"] == "train"]
        assert traces[2]["y"] == pytest.approx(losses)
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.slow
def test_loss_decreases_when_overfitting_two_images(tmp_path, capsys):
    root = _voc_subset(tmp_path / "data", IDS[:2])
    out = tmp_path / "w"
    n = 10
    # Clipping keeps SGD from scratch (no pretrained base here) from bouncing.
    code = _main(_args(root, out, "--batch_size", "2", "--no_augment", "--max_iter", str(n),
                       "--checkpoint_every", "0", "--lr", "1e-3", "--clip_grad", "10"))
    assert code == 0, capsys.readouterr().err
    train = [r for r in read_metrics(out / "ssd300_VOC_metrics.jsonl") if r["type"] == "train"]
    loss = [r["loss"] for r in train]  # the same batch every time: one loss curve
    assert len(loss) == n and all(r["grad_norm"] > 0 for r in train)
    last = sum(loss[-5:]) / 5
    assert last < 0.7 * loss[0], loss
    assert last < 0.8 * loss[1], loss  # still going down well after the first step
    assert loss[-1] < loss[n // 2 - 1], loss


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    root = _voc_subset(tmp_path / "data", IDS)  # 3 images, batch 1: epochs of 3 iterations
    common = ["--max_iter", "4", "--checkpoint_every", "2", "--seed", "7"]  # with augmentation
    a, b = tmp_path / "a", tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two runs side by side on a small machine
    # The reference also checks that --resume auto in an empty folder starts fresh.
    ref = subprocess.Popen(_train_cmd(*_args(root, a, *common, "--resume", "auto")),
                           stderr=subprocess.PIPE, text=True, env=env)
    victim = subprocess.Popen(_train_cmd(*_args(root, b, *common)), stderr=subprocess.PIPE,
                              text=True, env=env)
    _wait_for(lambda: (b / "ssd300_VOC_2.ckpt").exists(), victim)
    victim.send_signal(signal.SIGKILL)  # during iteration 3; checkpoint 2 is mid-epoch
    victim.wait(60)
    assert victim.returncode == -signal.SIGKILL
    _, ref_err = ref.communicate(timeout=900)
    assert ref.returncode == 0, ref_err
    assert not (b / "VOC.pth").exists()

    resumed = subprocess.run(_train_cmd(*_args(root, b, *common, "--resume", "auto")),
                             stderr=subprocess.PIPE, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "ssd300_VOC_" in resumed.stderr
    assert _same_state(_load(a / "VOC.pth"), _load(b / "VOC.pth"))
    ca, cb = load_checkpoint(a / "ssd300_VOC_4.ckpt"), load_checkpoint(b / "ssd300_VOC_4.ckpt")
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert (cb["epoch"], cb["batch_in_epoch"]) == (1, 1)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits(tmp_path):
    root = _voc_subset(tmp_path / "data", IDS[:1])
    out = tmp_path / "w"
    proc = subprocess.Popen(_train_cmd(*_args(root, out, "--max_iter", "1000",
                                              "--checkpoint_every", "0")),
                            stderr=subprocess.PIPE, text=True)
    metrics = out / "ssd300_VOC_metrics.jsonl"
    _wait_for(lambda: metrics.exists() and '"train"' in metrics.read_text(), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "SIGINT received" in err and "Traceback" not in err
    ckpts = list(out.glob("ssd300_VOC_*.ckpt"))
    assert len(ckpts) == 1
    ck = load_checkpoint(ckpts[0])
    assert ckpts[0].name == f"ssd300_VOC_{ck['iteration']}.ckpt" and ck["iteration"] >= 1
    assert not (out / "VOC.pth").exists()  # not the end of training
    assert not (out / "ssd300_VOC.lock").exists()  # the save folder's lock is released
    recs = read_metrics(metrics)
    assert recs[-1]["type"] == "interrupted" and recs[-1]["iter"] == ck["iteration"]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    root = _voc_subset(tmp_path / "data", IDS[:2], test_ids=(IDS[2],))
    out = tmp_path / "w"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Rank 0 also evaluates at iteration 1 while rank 1 waits: the ranks must stay in step.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "train.py"), *_args(root, out, "--max_iter", "2", "--checkpoint_every", "0",
                                          "--eval_every", "1", "--tensorboard")]
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=env, timeout=900,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ck = load_checkpoint(out / "ssd300_VOC_2.ckpt")
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2
    assert ck["batches_per_epoch"] == 1  # 2 images, 1 per process
    model = build_ssd("train", 300, 21)
    model.load_state_dict(ck["model"])  # rank 0's file, no "module." prefix
    load_ssd_weights(build_ssd("test", 300, 21), out / "VOC.pth")
    recs = read_metrics(out / "ssd300_VOC_metrics.jsonl")
    assert [r["type"] for r in recs].count("start") == 1  # rank 0 only
    assert recs[0]["world_size"] == 2
    assert [r["iter"] for r in recs if r["type"] == "train"] == [1, 2]
    assert [r["iter"] for r in recs if r["type"] == "eval"] == [1, 2]
    assert len(list((out / "tb").glob("events.out.tfevents.*"))) == 1  # rank 0 writes
    assert (out / "ssd300_VOC_curves.png").is_file()
