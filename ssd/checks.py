"""Argument checks shared by the predictors (torch-free: the ONNX predictor uses them too)."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_fraction"]


def check_fraction(value: object, name: str = "threshold") -> float:
    """``value`` as a float in ``[0, 1]`` (a score threshold, an IoU...).

    Raises:
        TypeError: not a real number (strings, None and bools included).
        ValueError: NaN, infinite or outside ``[0, 1]``; the message names ``name``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], not {type(value).__name__} "
                        f"{value!r}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} is NaN: it must be a number in [0, 1]")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {v:g}")
    return v
