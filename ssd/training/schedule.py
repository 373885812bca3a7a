"""Learning-rate schedule: ssd.pytorch's multistep decay plus an optional linear warm-up.

The rate is a pure function of the iteration, so a resumed run gets exactly the rate the
uninterrupted run had (ssd.pytorch counted decay steps in a local variable and lost them on
resume).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import torch


@dataclass(frozen=True)
class MultiStepWarmup:
    """``lr(it) = base_lr * gamma ** #{s in steps: it >= s} * warmup(it)``.

    ``it`` is the 0-based index of the optimizer step about to be taken (= number of steps
    already done). ``warmup(it) = factor + (1 - factor) * it / warmup_iters`` for
    ``it < warmup_iters``, else 1: the rate climbs linearly from ``factor * base_lr``.
    With ``warmup_iters = 0`` this is exactly ssd.pytorch's ``adjust_learning_rate`` schedule.
    """

    base_lr: float
    steps: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.1
    warmup_iters: int = 0
    warmup_factor: float = 0.001

    def __post_init__(self) -> None:
        if self.base_lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {self.base_lr}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if not 0.0 <= self.warmup_factor <= 1.0:
            raise ValueError(f"warmup_factor must be in [0, 1], got {self.warmup_factor}")
        steps = tuple(int(s) for s in self.steps)
        if any(s < 0 for s in steps) or list(steps) != sorted(steps):
            raise ValueError(f"lr steps must be non-negative and increasing, got {list(steps)}")
        object.__setattr__(self, "steps", steps)

    def __call__(self, iteration: int) -> float:
        decays = sum(1 for s in self.steps if iteration >= s)
        lr = self.base_lr * self.gamma ** decays
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            lr *= self.warmup_factor + (1.0 - self.warmup_factor) * alpha
        return lr

    def state_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MultiStepWarmup:
        return cls(**{**state, "steps": tuple(state["steps"])})


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def parse_steps(text: str | Iterable[int] | None) -> tuple[int, ...] | None:
    """``"80000,100000"`` -> ``(80000, 100000)``; ``""``/``"none"`` -> ``()``; None stays None."""
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(int(s) for s in text)
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError:
        raise ValueError(f"--lr_steps must be comma-separated integers, got {text!r}") from None

