"""Inference precision: float32, or bfloat16 autocast where the hardware computes it natively.

bf16 autocast only pays off on CPUs with native bf16 instructions (AVX512-BF16 or AMX on x86,
the BF16 extension on Arm): elsewhere oneDNN emulates it and the forward is several times
slower than float32. :func:`resolve_precision` turns a request (``'fp32'``, ``'bf16'``,
``'auto'``) into what will run, warning when bf16 was asked for but cannot run natively.
This module imports torch only inside :func:`autocast`, so the ONNX predictor can use it.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from typing import Any, ContextManager

__all__ = ["PRECISIONS", "PrecisionWarning", "autocast", "cpu_flags", "native_bf16",
           "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "auto")

# /proc/cpuinfo flags of native bf16 arithmetic: x86 (AVX512-BF16, AMX-BF16) and Arm (BF16).
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


class PrecisionWarning(UserWarning):
    """bf16 was requested where it cannot run natively; float32 is used instead."""


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` (``'cpu'`` or ``'cuda'``) computes bf16 natively."""
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return True  # Apple M2 and later; M1 lacks it but is rare as a deployment target
    return bool(cpu_flags() & _BF16_FLAGS)


def resolve_precision(precision: str, device_type: str = "cpu", *, warn: bool = True) -> str:
    """``'fp32'`` or ``'bf16'``: what runs for the requested ``precision`` on ``device_type``.

    ``'auto'`` gives bf16 only where it is native; ``'bf16'`` where it is not falls back to
    fp32 with a :class:`PrecisionWarning` (emulated bf16 is several times slower).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if native_bf16(device_type):
        return "bf16"
    if precision == "bf16" and warn:
        warnings.warn(f"bf16 was requested but this {device_type.upper()} has no native bf16 "
                      "arithmetic (x86: avx512_bf16/amx_bf16 CPU flags); running in fp32, "
                      "which is faster here than emulated bf16", PrecisionWarning, stacklevel=2)
    return "fp32"


def autocast(precision: str, device_type: str) -> ContextManager[Any]:
    """Autocast for a resolved precision (``'fp32'``: no autocast, results unchanged)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"resolved precision must be 'fp32' or 'bf16', got {precision!r}")
    import torch

    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
