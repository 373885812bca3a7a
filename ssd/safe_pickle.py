"""Reading the project's own pickles (``detections.pkl``, the annotation cache) without running
code: only plain containers, numbers, strings and numpy arrays are rebuilt."""

from __future__ import annotations

import io
import pickle
from typing import IO, Any

__all__ = ["UnsafePickleError", "safe_pickle_load"]

# The globals numpy arrays and scalars pickle through (numpy 1.x and 2.x names).
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for a callable besides numpy's array rebuilding: it is not run."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or (module == "numpy" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(f"it refers to {module}.{name}, which a file of detections or "
                                f"annotations never needs; the file contains code, which was "
                                f"not executed")


def safe_pickle_load(f: IO[bytes] | bytes) -> Any:
    """``pickle.load`` restricted to data: raises :class:`UnsafePickleError` instead of
    importing or calling anything else."""
    if isinstance(f, (bytes, bytearray)):
        f = io.BytesIO(f)
    return _DataOnlyUnpickler(f).load()
