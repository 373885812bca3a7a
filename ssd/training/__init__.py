"""SSD training: the loop, checkpoints, LR schedule, distributed plumbing, live plots.

``train.py`` is :func:`main`; :func:`run` trains from parsed flags (:func:`parse_args`).
"""

from .args import build_parser, parse_args
from .checkpoint import CheckpointWriter, find_latest_checkpoint, load_checkpoint
from .cli import main, run
from .engine import NonFiniteLossError, StopSignal, Trainer
from .schedule import MultiStepWarmup

__all__ = [
    "CheckpointWriter", "MultiStepWarmup", "NonFiniteLossError", "StopSignal", "Trainer",
    "build_parser", "find_latest_checkpoint", "load_checkpoint", "main", "parse_args", "run",
]
