"""A run owns its save folder: one lock per folder and run prefix, and a run identity.

The lock is ``<save_folder>/<prefix>.lock`` held with ``fcntl.flock`` for the run's life: the
kernel drops it when the process ends in any way (``kill -9`` included), so a lock file whose
lock is free was left by a run that died; it is taken over with a message. Inside the file the
holder writes its pid, host and start time for the refusal message of a second run.

A fresh run (no checkpoint to continue) refuses a folder that already holds another run's files
of the same prefix unless ``--overwrite``. Every checkpoint carries a ``run_id``; pruning only
removes checkpoints with the run's own id (see :class:`~ssd.training.checkpoint.CheckpointWriter`).
Under torchrun rank 0 claims the folder and every process learns the outcome.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping

from .distributed import DistInfo, all_gather_objects
from .saving import SaveFolderError, os_reason

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


class FolderInUseError(RuntimeError):
    """Another run holds the folder, or a fresh run would mix with another run's files."""


def new_run_id() -> str:
    return uuid.uuid4().hex


def run_id_of(checkpoint: Mapping[str, Any] | None) -> str:
    """The run identity a run continuing ``checkpoint`` keeps (a new one when there is none)."""
    if checkpoint is not None and isinstance(checkpoint.get("run_id"), str):
        return checkpoint["run_id"]
    return new_run_id()


def lock_path(folder: str | os.PathLike[str], prefix: str) -> Path:
    return Path(folder) / f"{prefix}.lock"


def _describe(holder: Mapping[str, Any]) -> str:
    started = holder.get("started")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, (int, float)) else "?")
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> dict[str, Any] | None:
        """Take the lock; returns the previous holder's record if it died holding it.

        Raises :class:`FolderInUseError` when a living process holds it.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd)
                if not holder:  # locked a moment ago, its record not yet written
                    time.sleep(0.2)
                    holder = _read_record(fd)
                os.close(fd)
                raise FolderInUseError(
                    f"another training run ({_describe(holder)}) is using this save folder for "
                    f"the same run prefix (lock file {self.path}); wait for it to end, stop it, "
                    f"or use another --save_folder") from None
            except BaseException:
                os.close(fd)
                raise
            # The previous holder may have removed the file between our open and our flock:
            # then we hold a lock on a file nobody else will ever open again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        previous = _read_record(fd)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                  "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        return previous or None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: nobody can take a half-released lock
        os.close(self._fd)
        self._fd = None


def _read_record(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 65536, 0)
        rec = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


# ----------------------------------------------------------------------------- folder contents

def run_files(folder: str | os.PathLike[str], prefix: str, final_name: str) -> list[str]:
    """Names of a run's checkpoints and weights files for ``prefix`` found in ``folder``."""
    pattern = re.compile(rf"^{re.escape(prefix)}_\d+\.(ckpt|pth)$")
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(e.name for e in folder.iterdir()
                  if (pattern.match(e.name) or e.name == final_name) and e.is_file())


def check_fresh_start(folder: str | os.PathLike[str], prefix: str, final_name: str,
                      overwrite: bool) -> None:
    """Refuse to start a new run among another run's files (unless ``overwrite``)."""
    found = run_files(folder, prefix, final_name)
    if not found:
        return
    shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
    if overwrite:
        log.warning("--overwrite: starting a new run in %s, which holds another run's files "
                    "(%s); files of the same iterations are replaced, the other run's older "
                    "checkpoints are never pruned", folder, shown)
        return
    raise FolderInUseError(
        f"--save_folder {os.fspath(folder)} already holds another run's files for {prefix} "
        f"({shown}): continue that run with --resume auto, choose a new --save_folder, or pass "
        f"--overwrite to start a new run there anyway")


def remove_stale_temporaries(folder: str | os.PathLike[str], prefix: str,
                             final_name: str) -> list[Path]:
    """Delete ``.NAME.*.tmp`` files that interrupted saves of this run prefix left behind.

    Only safe with the folder's lock held: no other process writes these names then.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^\.({re.escape(prefix)}_.+|{re.escape(final_name)})\..+\.tmp$")
    removed, size = [], 0
    for entry in folder.iterdir():
        if pattern.match(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                size += entry.stat().st_size
                entry.unlink()
                removed.append(entry)
    if removed:
        log.warning("removed %d temporary file(s) left by interrupted saves (%.1f MB): %s",
                    len(removed), size / 1e6, ", ".join(sorted(p.name for p in removed)))
    return removed


# ----------------------------------------------------------------------------- the claim

def _prepare_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        not_dir = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        raise SaveFolderError(f"cannot use --save_folder {folder}: {os_reason(not_dir)} "
                              f"(it is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SaveFolderError(f"cannot create --save_folder {folder}: {os_reason(e)}") from e


def _claim(folder: Path, prefix: str, final_name: str, fresh: bool | None,
           overwrite: bool) -> RunLock | None:
    _prepare_folder(folder)
    lock = RunLock(lock_path(folder, prefix))
    if fcntl is None:
        log.warning("no file locks on this platform: nothing stops a second run from using "
                    "%s at the same time", folder)
        lock = None
    else:
        try:
            previous = lock.acquire()
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise SaveFolderError(f"cannot write to --save_folder {folder} (lock file "
                                      f"{lock.path}): {os_reason(e)}") from e
            log.warning("%s does not support file locks (%s): nothing stops a second run "
                        "from using it at the same time", folder, os_reason(e))
            lock, previous = None, None
        if previous:
            log.warning("took over the lock %s left by a run that is no longer running (%s)",
                        lock.path, _describe(previous))
    try:
        remove_stale_temporaries(folder, prefix, final_name)
        if fresh is None:  # --resume auto: fresh when there is nothing to continue
            ckpt = re.compile(rf"^{re.escape(prefix)}_\d+\.ckpt$")
            fresh = not any(ckpt.match(n) for n in run_files(folder, prefix, final_name))
        if fresh:
            check_fresh_start(folder, prefix, final_name, overwrite)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


# flock() errors of file systems without locks (some network mounts): run unlocked, warned.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
_ERRORS: dict[str, type[Exception]] = {"in_use": FolderInUseError, "save": SaveFolderError}


@contextlib.contextmanager
def claim_save_folder(folder: str | os.PathLike[str], prefix: str, final_name: str, *,
                      resume: str | None, overwrite: bool, dist: DistInfo) -> Iterator[None]:
    """Hold ``folder`` for run ``prefix`` for the duration (rank 0 claims, all learn the result).

    ``resume``: the ``--resume`` flag (None: a fresh run; ``'auto'``: fresh only when there is
    no checkpoint of the prefix). Raises :class:`FolderInUseError` or
    :class:`~ssd.training.saving.SaveFolderError` on every process when rank 0 may not proceed.
    """
    lock, failure = None, None
    if dist.is_main:
        fresh = True if resume is None else (None if resume == "auto" else False)
        try:
            lock = _claim(Path(folder), prefix, final_name, fresh, overwrite)
        except FolderInUseError as e:
            failure = ("in_use", str(e))
        except SaveFolderError as e:
            failure = ("save", str(e))
        except OSError as e:  # e.g. a stale temporary file that cannot be removed
            where = f" ({e.filename})" if e.filename else ""
            failure = ("save", f"cannot use --save_folder {folder}{where}: {os_reason(e)}")
    failure = all_gather_objects(failure)[0]
    if failure is not None:
        kind, message = failure
        raise _ERRORS[kind](message)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
