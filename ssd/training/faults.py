"""Fault injection for tests: make a training run die or fail a write at a named point.

Inactive unless the environment variable ``SSD_TRAIN_FAULT`` is set, so that tests can hit a
narrow window (between two files of one save) deterministically. Its value is
``POINT[@ITERATION]=ACTION[,...]``:

- points: ``write`` (a checkpoint/weights file is about to be written; the path is known),
  ``after_checkpoint`` (the ``.ckpt`` is on disk, its ``.pth`` twin not yet),
  ``before_final_weights`` (the ``.pth`` twin is on disk, the final ``VOC.pth`` not yet);
- actions: ``kill`` (SIGKILL to this process, as ``kill -9`` would), ``enospc``, ``eacces``,
  ``eisdir`` (raise the ``OSError`` the operating system would).
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "SSD_TRAIN_FAULT"
_ERRNOS = {"enospc": errno.ENOSPC, "eacces": errno.EACCES, "eisdir": errno.EISDIR}


def _wanted(spec: str, point: str, iteration: int | None) -> str | None:
    for item in spec.split(","):
        where, sep, action = item.strip().partition("=")
        name, at, it = where.partition("@")
        if not sep or name != point:
            continue
        if at and (iteration is None or int(it) != int(iteration)):
            continue
        return action.strip().lower()
    return None


def fault_point(point: str, iteration: int | None = None,
                path: str | os.PathLike[str] | None = None) -> None:
    """Do what ``$SSD_TRAIN_FAULT`` asks at ``point`` (nothing when it is unset)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    action = _wanted(spec, point, iteration)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action in _ERRNOS:
        code = _ERRNOS[action]
        raise OSError(code, os.strerror(code), None if path is None else os.fspath(path))
    raise ValueError(f"{ENV}: unknown action {action!r} (kill, enospc, eacces, eisdir)")
