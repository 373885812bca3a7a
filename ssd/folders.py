"""Output folders checked up front, so a long run cannot end in a write error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

__all__ = ["OutputFolderError", "check_output_folder"]

PathLike = Union[str, "os.PathLike[str]"]


class OutputFolderError(ValueError):
    """An output folder cannot be created or written (the message names it and the reason)."""


def check_output_folder(path: PathLike, flag: str = "output folder") -> Path:
    """Prove that ``path`` is, or can become, a folder a file can be written in.

    Nothing is created: the check writes (and removes) a probe file in ``path`` or, when it
    does not exist yet, in its nearest existing parent, where the run will create it.

    Args:
        path: the folder.
        flag: how the user named it in messages (``'--save_folder'``).

    Returns:
        The folder as a :class:`~pathlib.Path` (``~`` expanded).

    Raises:
        OutputFolderError: ``path`` or one of its parents is a file, or the folder cannot be
            written (permission, read-only file system, ...); the message names ``flag``, the
            path and the operating system's reason.
    """
    folder = Path(path).expanduser()
    where = f"{flag} {os.fspath(path)}"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == folder:
            raise OutputFolderError(f"{where} is a file, not a folder: choose another path")
        raise OutputFolderError(f"{where} cannot be created: its parent {existing} is a "
                                "file, not a folder; choose another path")
    try:
        # A real write: os.access ignores read-only mounts and answers "yes" for root.
        fd, probe = tempfile.mkstemp(prefix=".write-check-", suffix=".tmp", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        place = "" if existing == folder else f" (nothing can be created in {existing})"
        raise OutputFolderError(f"{where} is not writable{place}: {_reason(e)}") from e
    return folder


def _reason(e: OSError) -> str:
    return e.strerror or str(e)
