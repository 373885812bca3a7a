"""A run owns its save folder, failed saves say so, and resuming handles what a kill leaves.

End to end with ``train.py`` subprocesses on one sample image (SSD300 on the CPU, so every test
trains at most one iteration); ``SSD_TRAIN_FAULT`` (ssd.training.faults) kills a run or fails a
write at a named point so that narrow windows are hit deterministically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from ssd.training import main
from ssd.training.checkpoint import CheckpointWriter, load_checkpoint
from ssd.training.distributed import DistInfo
from ssd.training.metrics import MetricsLog, read_metrics
from ssd.training.ownership import FolderInUseError, claim_save_folder
from ssd.training.saving import SaveFailedError

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007"
IMAGE = "2007_000027"
EXIT_SAVE_FAILED = 74


def _train(root: Path, folder: Path, *extra: str, fault: str | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SSD_TRAIN_FAULT"}
    if fault:
        env["SSD_TRAIN_FAULT"] = fault
    cmd = [sys.executable, str(REPO / "train.py"), *_flags(root, folder), *extra]
    return subprocess.run(cmd, stderr=subprocess.PIPE, text=True, env=env, timeout=timeout)


def _main(capsys, root: Path, folder: Path, *extra: str) -> tuple[int, str]:
    """train.py in this process (no interpreter start-up): exit status and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*_flags(root, folder), *extra])
    return e.value.code, capsys.readouterr().err


def _flags(root: Path, folder: Path) -> list[str]:
    return ["--dataset_root", str(root), "--train_sets", "2007:trainval", "--basenet", "none",
            "--batch_size", "2", "--num_workers", "0", "--device", "cpu", "--log_every", "1",
            "--no_progress", "--seed", "3", "--no_augment", "--checkpoint_every", "1",
            "--save_folder", str(folder)]


def _train_iters(folder: Path) -> list[int]:
    return [r["iter"] for r in read_metrics(folder / "ssd300_VOC_metrics.jsonl")
            if r["type"] == "train"]


def _plain(model_state: dict) -> dict:
    return {k: v.contiguous() for k, v in model_state.items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    voc = root / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    shutil.copy(SAMPLE / "JPEGImages" / f"{IMAGE}.jpg", voc / "JPEGImages")
    shutil.copy(SAMPLE / "Annotations" / f"{IMAGE}.xml", voc / "Annotations")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text(IMAGE + "\n")
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory, data_root) -> Path:
    """A 2-iteration run killed (-9) after its final checkpoint, before its weights files."""
    folder = tmp_path_factory.mktemp("runs") / "killed"
    proc = _train(data_root, folder, "--max_iter", "2", fault="after_checkpoint@2=kill")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return folder


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)  # copy2: modification times kept
    return dst


# ----------------------------------------------------------------------------- the kill window

def test_kill_before_final_weights_then_resume_auto_writes_them(killed, data_root, tmp_path,
                                                                capsys):
    names = {p.name for p in killed.iterdir()}
    assert {"ssd300_VOC_1.ckpt", "ssd300_VOC_1.pth", "ssd300_VOC_2.ckpt"} <= names
    assert "ssd300_VOC_2.pth" not in names and "VOC.pth" not in names
    lock = json.loads((killed / "ssd300_VOC.lock").read_text())  # left by the dead run
    assert lock["pid"] > 0

    folder = _copy(killed, tmp_path / "w")
    code, err = _main(capsys, data_root, folder, "--max_iter", "2", "--resume", "auto")
    assert code == 0, err
    assert "took over the lock" in err and f"pid {lock['pid']}" in err
    final = _plain(load_checkpoint(folder / "ssd300_VOC_2.ckpt")["model"])
    assert _same(_load(folder / "ssd300_VOC_2.pth"), final)
    assert _same(_load(folder / "VOC.pth"), final)
    assert f"weights (ssd.pytorch format): {folder / 'VOC.pth'}" in err
    assert _train_iters(folder) == [1, 2]  # nothing trained again
    assert not (folder / "ssd300_VOC.lock").exists()  # released at exit


def test_damaged_newest_checkpoint_falls_back_and_reruns_are_logged_once(killed, data_root,
                                                                        tmp_path, capsys):
    folder = _copy(killed, tmp_path / "w")
    newest = folder / "ssd300_VOC_2.ckpt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])  # a truncated file
    stale = [folder / ".ssd300_VOC_2.ckpt.k2j4x9.tmp", folder / ".VOC.pth.a8b7c6.tmp"]
    for p in stale:
        p.write_bytes(os.urandom(1 << 20))
    foreign = folder / ".ssd512_VOC_3.ckpt.q1w2e3.tmp"  # another prefix's: not ours to delete
    foreign.write_bytes(b"x")
    with open(folder / "ssd300_VOC_metrics.jsonl", "a") as f:
        f.write('{"type": "tra')  # a torn last line, as a kill mid-write leaves
    assert _train_iters(folder) == [1, 2]

    code, err = _main(capsys, data_root, folder, "--max_iter", "2", "--resume", "auto")
    assert code == 0, err
    assert f"{newest} is damaged" in err
    assert f"newest intact one, {folder / 'ssd300_VOC_1.ckpt'}" in err
    assert "resuming from" in err
    assert not any(p.exists() for p in stale) and foreign.exists()
    assert "removed 2 temporary file(s)" in err
    assert load_checkpoint(newest)["iteration"] == 2  # written again, whole
    assert (folder / "VOC.pth").is_file()
    lines = (folder / "ssd300_VOC_metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone
    assert _train_iters(folder) == [1, 2]  # iteration 2 ran twice, logged once
    old = read_metrics(folder / "ssd300_VOC_metrics_superseded.jsonl")
    assert [r["iter"] for r in old if r["type"] == "train"] == [2]


# ----------------------------------------------------------------------------- ownership

def test_fresh_run_refuses_another_runs_folder_and_overwrite_prunes_only_its_own(
        killed, data_root, tmp_path, capsys):
    folder = _copy(killed, tmp_path / "w")
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix != ".lock"}
    code, err = _main(capsys, data_root, folder, "--max_iter", "1")
    assert code == 2, err
    assert "already holds another run's files for ssd300_VOC" in err and "ssd300_VOC_2.ckpt" in err
    assert "--resume auto" in err and "--overwrite" in err and "Traceback" not in err
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix != ".lock"}
    assert after == before  # nothing touched

    other = load_checkpoint(folder / "ssd300_VOC_2.ckpt")["run_id"]
    code, err = _main(capsys, data_root, folder, "--max_iter", "1", "--overwrite",
                      "--keep_checkpoints", "1")
    assert code == 0, err
    mine = load_checkpoint(folder / "ssd300_VOC_1.ckpt")
    assert mine["iteration"] == 1 and mine["run_id"] != other
    # keep 1 would have pruned the older run's newest checkpoint without run identities.
    assert load_checkpoint(folder / "ssd300_VOC_2.ckpt")["run_id"] == other


def test_second_run_on_the_same_folder_refuses_naming_the_first(data_root, tmp_path, capsys):
    folder = tmp_path / "w"
    first = subprocess.Popen([sys.executable, str(REPO / "train.py"), *_flags(data_root, folder),
                              "--max_iter", "1000", "--checkpoint_every", "0"],
                             stderr=subprocess.DEVNULL)
    try:
        lock = folder / "ssd300_VOC.lock"
        end = time.monotonic() + 300
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None and time.monotonic() < end, "first run did not start"
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # holds the lock, leaves the CPU to the second run
        # This process is the second run.
        code, err = _main(capsys, data_root, folder, "--max_iter", "1", "--resume", "auto")
        assert first.poll() is None
        assert code == 2, err
        assert f"another training run (pid {first.pid} on host" in err and str(lock) in err
    finally:
        first.kill()
        first.wait(60)
    # The dead run's lock is free: the next run (here: the claim itself) takes it over.
    assert json.loads(lock.read_text())["pid"] == first.pid
    log = logging.getLogger("ssd.training.ownership")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        with claim_save_folder(folder, "ssd300_VOC", "VOC.pth", resume="auto", overwrite=False,
                               dist=DistInfo()):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        log.removeHandler(handler)
    assert any("no longer running" in m and f"pid {first.pid}" in m for m in records)
    assert not lock.exists()


def test_claim_is_released_on_exceptions_and_refused_while_held(tmp_path):
    kw = dict(resume="auto", overwrite=False, dist=DistInfo())
    with pytest.raises(RuntimeError, match="boom"):
        with claim_save_folder(tmp_path, "ssd300_VOC", "VOC.pth", **kw):
            raise RuntimeError("boom")
    with claim_save_folder(tmp_path, "ssd300_VOC", "VOC.pth", **kw):
        # The same process, another open file description: flock says no.
        with pytest.raises(FolderInUseError, match=f"pid {os.getpid()}"):
            with claim_save_folder(tmp_path, "ssd300_VOC", "VOC.pth", **kw):
                pass
        with claim_save_folder(tmp_path, "ssd512_VOC", "VOC512.pth", **kw):
            pass  # another prefix in the same folder is another run's business
    with claim_save_folder(tmp_path, "ssd300_VOC", "VOC.pth", **kw):
        pass


# ----------------------------------------------------------------------------- failed saves

def _mount_tmpfs(path: Path, size: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                         capture_output=True)
    return res.returncode == 0


@pytest.mark.parametrize("case", ["disk_full", "path_is_a_folder"])
def test_failed_save_names_file_reason_and_last_good_checkpoint(case, killed, data_root,
                                                                tmp_path, capsys, monkeypatch):
    folder = tmp_path / "w"
    fault, mounted = None, False
    files = ["ssd300_VOC_1.ckpt", "ssd300_VOC_1.pth", "ssd300_VOC_metrics.jsonl"]
    if case == "disk_full":
        need = sum((killed / f).stat().st_size for f in files)
        # Room for the resumed checkpoint and its twin, then half of checkpoint 2: full.
        mounted = _mount_tmpfs(folder, need + (killed / files[0]).stat().st_size // 2)
        if not mounted:  # no mounting here: the same OSError, simulated at the write
            fault = "write@2=enospc"
        reason, bad, good = "No space left on device", "ssd300_VOC_2.ckpt", "ssd300_VOC_1.ckpt"
    else:
        (folder / "ssd300_VOC_2.pth").mkdir(parents=True)  # a folder where a file must go
        reason, bad, good = "Is a directory", "ssd300_VOC_2.pth", "ssd300_VOC_2.ckpt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(killed / f, folder / f)
        if fault:
            monkeypatch.setenv("SSD_TRAIN_FAULT", fault)
        code, err = _main(capsys, data_root, folder, "--max_iter", "2", "--resume", "auto")
        assert code == EXIT_SAVE_FAILED, err
        line = f"train.py: saving failed: could not write {folder / bad}: {reason} ("
        assert line in err, err
        assert f"the last good checkpoint is {folder / good}\n" in err
        assert load_checkpoint(folder / good)["iteration"] == int(good.split("_")[2][0])
        assert not list(folder.glob(".*.tmp")) and not (folder / "ssd300_VOC.lock").exists()
        if case == "disk_full":
            assert not (folder / bad).exists()
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=False)


def test_save_folder_that_is_a_file_fails_before_training(data_root, tmp_path, capsys):
    not_a_folder = tmp_path / "weights"
    not_a_folder.write_text("mine")
    code, err = _main(capsys, data_root, not_a_folder, "--max_iter", "1")
    assert code == EXIT_SAVE_FAILED, err
    assert f"cannot use --save_folder {not_a_folder}: Not a directory (ENOTDIR)" in err
    assert not_a_folder.read_text() == "mine"


def test_writer_permission_denied_is_one_clear_error(tmp_path, monkeypatch):
    writer = CheckpointWriter(tmp_path, "ssd300_VOC", "VOC", 300, extra={"run_id": "r"})
    state = {"model": torch.nn.Linear(2, 1).state_dict(), "iteration": 1}
    writer(state, 1, final=False)
    monkeypatch.setenv("SSD_TRAIN_FAULT", "write@2=eacces")
    with pytest.raises(SaveFailedError) as e:
        writer({**state, "iteration": 2}, 2, final=False)
    assert str(e.value) == (f"could not write {tmp_path / 'ssd300_VOC_2.ckpt'}: Permission denied "
                            f"(EACCES); the last good checkpoint is "
                            f"{tmp_path / 'ssd300_VOC_1.ckpt'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd300_VOC_1.ckpt", "ssd300_VOC_1.pth"]


def test_metrics_log_ends_a_torn_line_and_survives_a_failed_write(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    path.write_text('{"type": "train", "iter": 1}\n{"type": "tr')
    with MetricsLog(path) as m:
        m.write({"type": "train", "iter": 2})
    assert [r["iter"] for r in read_metrics(path)] == [1, 2]
    with MetricsLog(path) as m:
        os.close(m._fd)  # a descriptor whose writes fail (EBADF), as a full disk would
        m._fd = os.open(os.devnull, os.O_RDONLY)
        m.write({"type": "train", "iter": 3})
        m.write({"type": "train", "iter": 4})
    assert sum("could not write a record" in r.getMessage() for r in caplog.records) == 1


def test_stale_temporary_files_are_never_checkpoints(tmp_path):
    from ssd.training.checkpoint import list_checkpoints
    from ssd.training.ownership import remove_stale_temporaries

    fd, tmp = tempfile.mkstemp(prefix=".ssd300_VOC_8.ckpt.", suffix=".tmp", dir=tmp_path)
    os.close(fd)
    assert list_checkpoints(tmp_path, "ssd300_VOC") == []
    assert remove_stale_temporaries(tmp_path, "ssd300_VOC", "VOC.pth") == [Path(tmp)]
