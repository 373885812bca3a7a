"""What ``eval.py``/``test.py`` take from the weights file: its path (a zoo name is fetched),
and the config and class names it carries when the flags do not give them."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["weights_defaults"]


def weights_defaults(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(config, classes)`` for ``args``: ``--config``/``--classes`` when given, else the
    ``--trained_model`` file's own (``None`` where it carries none: plain ssd.pytorch files
    keep the dataset defaults). Sets ``args.weights_path`` to the file to load.

    Classes are taken from the file for VOC-format data only: a COCO-format dataset's classes
    are its annotation file's categories.
    """
    from ..weights.zoo import read_weights, resolve_weights
    from .cli import parse_classes

    classes = parse_classes(args.classes)
    if getattr(args, "from_results", None):  # scoring saved results: no model to read
        args.weights_path = None
        return args.config, classes
    try:
        args.weights_path = os.fspath(resolve_weights(args.trained_model))
    except FileNotFoundError:
        # Reported when the model is loaded, after the dataset flags have been checked.
        args.weights_path = args.trained_model
        return args.config, classes
    if args.config is not None and (classes is not None or args.dataset != "VOC"):
        return args.config, classes
    found = read_weights(args.trained_model)
    config = args.config if args.config is not None else found.config
    if classes is None and args.dataset == "VOC" and found.class_names is not None:
        classes = list(found.class_names)
    return config, classes
