"""What ``eval.py``/``test.py`` take from the weights file: its path (a zoo name is fetched),
and the config and class names it carries when the flags do not give them."""

from __future__ import annotations

import argparse
import os
from typing import Any

__all__ = ["DEFAULT_ZOO_MODEL", "use_model_labels", "weights_defaults"]

# The zoo name of the default --trained_model file (ssd.pytorch's ssd300_mAP_77.43_v2.pth).
DEFAULT_ZOO_MODEL = "ssd300_voc0712"


def weights_defaults(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(config, classes)`` for ``args``: ``--config``/``--classes`` when given, else the
    ``--trained_model`` file's own (``None`` where it carries none: plain ssd.pytorch files
    keep the dataset defaults). Sets ``args.weights_path`` to the file to load. The default
    ``weights/ssd300_mAP_77.43_v2.pth``, when missing, is taken from the cache if the zoo's
    copy of it is there (never downloaded unasked).

    Classes are taken from the file for VOC-format data only: a COCO-format dataset's classes
    are its annotation file's categories (:func:`use_model_labels` then maps the model's
    labels onto them by name; ``args.model_class_names`` keeps the file's names for it).
    """
    from ..weights.zoo import cached_path, read_weights, resolve_weights
    from .cli import DEFAULT_MODEL, parse_classes

    classes = parse_classes(args.classes)
    args.model_class_names = None
    if getattr(args, "from_results", None):  # scoring saved results: no model to read
        args.weights_path = None
        return args.config, classes
    if args.trained_model == DEFAULT_MODEL and not os.path.isfile(DEFAULT_MODEL) \
            and cached_path(DEFAULT_ZOO_MODEL) is not None:
        args.trained_model = DEFAULT_ZOO_MODEL  # the same weights, already in the cache
    try:
        args.weights_path = os.fspath(resolve_weights(args.trained_model))
    except FileNotFoundError:
        # Reported when the model is loaded, after the dataset flags have been checked.
        args.weights_path = args.trained_model
        return args.config, classes
    if args.config is not None and classes is not None:
        return args.config, classes
    found = read_weights(args.trained_model)
    config = args.config if args.config is not None else found.config
    args.model_class_names = found.class_names
    if classes is None and args.dataset == "VOC" and found.class_names is not None:
        classes = list(found.class_names)
    return config, classes


def use_model_labels(dataset: Any, names: Any) -> None:
    """Relabel a COCO-format ``dataset`` into a model's label space, matching class names.

    A model whose labels are not the annotation file's categories in id order (torchvision's
    COCO SSD has 90 slots, label = category id, ten of them ``N/A``) is scored by name: each
    model label gets the category of the same name; labels without one get category id -1,
    which COCO scoring ignores. Does nothing when the names already agree or are unknown.

    Raises:
        ValueError: a category of the dataset has no class of the model.
    """
    if names is None or not hasattr(dataset, "cat_ids") or tuple(names) == tuple(dataset.classes):
        return
    names = tuple(str(n) for n in names)
    by_name = dict(zip(dataset.classes, dataset.cat_ids))
    unknown = [n for n in dataset.classes if n not in names]
    if unknown:
        more = ", ..." if len(unknown) > 8 else ""
        raise ValueError(f"the model's {len(names)} classes lack {len(unknown)} categories of "
                         f"the dataset ({', '.join(unknown[:8])}{more}); evaluate on a dataset "
                         f"with only the model's categories")
    cat_ids = [int(by_name.get(n, -1)) for n in names]
    dataset.classes = names
    dataset.cat_ids = cat_ids
    dataset.label_to_cat_id = dict(enumerate(cat_ids))
    dataset.cat_id_to_label = {c: i for i, c in enumerate(cat_ids) if c >= 0}
    dataset.num_classes = len(names) + 1
    transform = getattr(dataset, "target_transform", None)
    if hasattr(transform, "cat_id_to_label"):
        transform.cat_id_to_label = dict(dataset.cat_id_to_label)
