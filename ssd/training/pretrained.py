"""``train.py --pretrained NAME|PATH`` and the class names and config that training files carry.

The trainer CLI calls :func:`read_pretrained` before it reads the config (a pretrained file
brings its own geometry when ``--config`` is not given) and :func:`apply_pretrained` in place
of the base-net load.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Sequence

from torch import nn

from ..config import get_config

__all__ = ["apply_pretrained", "dataset_class_names", "read_pretrained"]

log = logging.getLogger("ssd.training")


def dataset_class_names(dataset: Any) -> list[str] | None:
    """The foreground class names of a training dataset (or of the first of a concatenation)."""
    names = getattr(dataset, "classes", None)
    if names is None and getattr(dataset, "datasets", None):
        names = getattr(dataset.datasets[0], "classes", None)
    return [str(n) for n in names] if names is not None else None


def read_pretrained(args: argparse.Namespace) -> Any:
    """Read ``--pretrained`` (a path or zoo name; a zoo name is downloaded once) and, when
    ``--config`` was not given, set ``args.config`` to the file's config (training settings the
    file lacks come from the dataset's default config). ``None`` without ``--pretrained``."""
    from ..weights import WeightsFileError
    from ..weights.download import DownloadError
    from ..weights.zoo import read_weights
    from .cli import SetupError

    spec = getattr(args, "pretrained", None)
    if not spec:
        return None
    try:
        found = read_weights(spec)
    except (FileNotFoundError, DownloadError, WeightsFileError, KeyError) as e:
        raise SetupError(f"--pretrained {spec}: {e}") from e
    if "conf.0.weight" not in found.state_dict:
        raise SetupError(f"--pretrained {spec}: not a whole SSD (use it as --basenet)")
    if args.config is None:
        default = get_config("voc300" if args.dataset == "VOC" else "coco300")
        args.config = {**default, **found.config} if found.config else default["name"].lower()
    return found


def apply_pretrained(model: nn.Module, found: Any, spec: str,
                     class_names: Sequence[str] | None) -> None:
    """Load what fits of ``found`` into ``model`` and log what was loaded and re-initialised."""
    from ..weights.finetune import load_for_finetuning
    from .cli import SetupError

    try:
        report = load_for_finetuning(model, found.state_dict, config=found.config,
                                     class_names=found.class_names,
                                     model_class_names=class_names)
    except (ValueError, RuntimeError) as e:
        raise SetupError(f"--pretrained {spec}: {e}") from e
    log.info("--pretrained %s:\n%s", spec, report.summary())
