"""Errors and warnings raised for bad dataset files."""

from __future__ import annotations

from typing import Any


class BadSampleError(ValueError):
    """A dataset sample cannot be used: its image or annotation is missing, unreadable or wrong.

    The message names the file and the sample id. ``path`` and ``sample_id`` are kept as
    attributes so that callers (``skip_bad=True`` datasets, data checkers) can report them.
    """

    def __init__(self, message: str, *, path: str | None = None,
                 sample_id: Any = None) -> None:
        super().__init__(message)
        self.path = path
        self.sample_id = sample_id


class MissingFileError(BadSampleError, FileNotFoundError):
    """A sample's image or annotation file does not exist (also a ``FileNotFoundError``)."""

    def __str__(self) -> str:  # FileNotFoundError would otherwise format errno/filename
        return str(self.args[0]) if self.args else ""


class UnknownClassError(BadSampleError):
    """An annotation names a class that is not in the dataset's class list."""


class DataWarning(UserWarning):
    """Something in the data was repaired or ignored (degenerate box dropped, EXIF flag ignored)."""


def describe(path: Any, sample_id: Any = None) -> str:
    """``'<path>'`` or ``'<path> (id <sample_id>)'`` for messages."""
    return f"{path}" if sample_id is None else f"{path} (id {sample_id})"
