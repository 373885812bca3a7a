"""Writes of a run's files whose failure says what failed: the path and the operating system's
reason (``No space left on device``), never a raw PyTorch traceback.

``torch.save`` turns a failed ``write`` on a full disk into an opaque ``RuntimeError``
("unexpected pos ..."); :func:`save_file` remembers the ``OSError`` behind it and raises that.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Any

import torch

from ..io import atomic_save
from .faults import fault_point


class SaveFailedError(RuntimeError):
    """A file of the run could not be written (disk full, permission denied, ...)."""


class SaveFolderError(SaveFailedError):
    """The save folder cannot be created or written (checked before training starts)."""


def os_reason(e: OSError) -> str:
    """``'No space left on device (ENOSPC)'`` for an ``OSError``."""
    reason = e.strerror or str(e) or type(e).__name__
    name = errno.errorcode.get(e.errno) if e.errno is not None else None
    return f"{reason} ({name})" if name else reason


class _RecordingFile:
    """A file object that remembers the ``OSError`` a write raised."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def save_file(obj: Any, path: str | os.PathLike[str], iteration: int | None = None) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; a failed write raises its ``OSError``."""

    def saver(o: Any, f: IO[bytes]) -> None:
        fault_point("write", iteration, path)
        rec = _RecordingFile(f)
        try:
            torch.save(o, rec)
        except RuntimeError as e:
            if rec.error is not None:
                raise rec.error from e
            raise

    return atomic_save(obj, path, saver=saver)


def failed_save_message(path: str | os.PathLike[str], error: OSError,
                        last_good: str | os.PathLike[str] | None) -> str:
    """One line: what could not be written, why, and where the last good state is."""
    good = os.fspath(last_good) if last_good is not None else "none (nothing saved by this run)"
    return (f"could not write {os.fspath(path)}: {os_reason(error)}; "
            f"the last good checkpoint is {good}")
