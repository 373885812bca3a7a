"""torchvision's ``ssd300_vgg16`` state dict turned into our SSD300, with its config and names.

The two networks are the same: the 71 tensors map one to one, with the same shapes and the
same output layout (``/work/shared/spec/TORCHVISION_SSD.md`` lists the facts). What differs is
around the network (prior clipping, the decode's exponent cap, post-processing, input means);
the ``tv_coco300`` config describes torchvision's choices, and the converted file carries it,
so ``Detector.from_checkpoint(file)`` reproduces torchvision's detections.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch

from ..config import get_config
from .files import WeightsFile
from .loading import WeightsFileError, _list, normalize_state_dict

__all__ = ["TORCHVISION_SSD_CONFIG", "convert_torchvision_ssd", "is_torchvision_ssd",
           "torchvision_ssd_key_map"]

TORCHVISION_SSD_CONFIG = "tv_coco300"

# torchvision's backbone.features indices of conv1_1 .. conv4_3: the same in our `vgg` list.
_FEATURES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21)
# backbone.extra.0 is pool4, conv5_1..5_3, then (pool5, fc6, ReLU, fc7, ReLU) as its item 7.
_EXTRA0 = {"1": 24, "3": 26, "5": 28, "7.1": 31, "7.3": 33}
_N_EXTRA_BLOCKS = 4  # backbone.extra.1..4: (1x1 conv, ReLU, 3x3 conv, ReLU) each
_N_HEADS = 6


def torchvision_ssd_key_map() -> OrderedDict[str, str]:
    """``{torchvision key: our key}`` for the 71 tensors, in our state dict's order."""
    pairs: list[tuple[str, str]] = []

    def layer(src: str, dst: str) -> None:
        pairs.extend((f"{src}.{p}", f"{dst}.{p}") for p in ("weight", "bias"))

    for i in _FEATURES:
        layer(f"backbone.features.{i}", f"vgg.{i}")
    for src, dst in _EXTRA0.items():
        layer(f"backbone.extra.0.{src}", f"vgg.{dst}")
    pairs.append(("backbone.scale_weight", "L2Norm.weight"))
    for j in range(1, _N_EXTRA_BLOCKS + 1):
        for n in (0, 2):
            layer(f"backbone.extra.{j}.{n}", f"extras.{2 * (j - 1) + n // 2}")
    for i in range(_N_HEADS):
        layer(f"head.regression_head.module_list.{i}", f"loc.{i}")
    for i in range(_N_HEADS):
        layer(f"head.classification_head.module_list.{i}", f"conf.{i}")
    return OrderedDict(pairs)


def is_torchvision_ssd(state: Mapping[str, object]) -> bool:
    """Whether a state dict looks like torchvision's SSD (its head and backbone keys)."""
    return any(str(k).startswith("head.classification_head.") for k in state) and \
        any(str(k).startswith("backbone.") for k in state)


def convert_torchvision_ssd(tv_state_dict: Mapping[str, torch.Tensor],
                            class_names: Sequence[str] | None = None) -> WeightsFile:
    """Turn a torchvision ``ssd300_vgg16`` state dict (any ``num_classes``) into ours.

    Args:
        tv_state_dict: ``model.state_dict()`` of ``torchvision.models.detection.ssd300_vgg16``
            (or the downloaded ``ssd300_vgg16_coco-*.pth``); ``module.`` prefixes are fine.
        class_names: the foreground names, ``num_classes - 1`` of them, label order. Default:
            for 91 outputs the COCO category-id slots torchvision reports
            (:data:`ssd.data.classes.COCO91_CLASSES`, unused ids named ``"N/A"`` so that labels
            line up); otherwise ``class_1``, ``class_2``, ...

    Returns:
        A :class:`~ssd.weights.files.WeightsFile`: the state dict in our layout (tensors shared
        with the input), ``config`` the ``tv_coco300`` config with its ``num_classes`` (plain
        data), ``class_names`` and ``meta`` (its ``source``). Write it with
        ``save_weights_file(path, wf.state_dict, config=wf.config,
        class_names=wf.class_names, **wf.meta)``.

    Raises:
        WeightsFileError: not a torchvision SSD300-VGG16 state dict (missing, unexpected or
            misshapen tensors, named), or ``class_names`` of the wrong length.
    """
    from ..data.classes import COCO91_CLASSES, check_class_names

    source = "the torchvision SSD300 state dict"
    state = normalize_state_dict(tv_state_dict, source)
    key_map = torchvision_ssd_key_map()
    missing = [k for k in key_map if k not in state]
    unexpected = [k for k in state if k not in key_map]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing {_list(missing)}")
        if unexpected:
            problems.append(f"unexpected {_list(unexpected)}")
        raise WeightsFileError(
            f"{source} is not torchvision's ssd300_vgg16 (models.detection): "
            f"{'; '.join(problems)}")
    out = OrderedDict((ours, state[theirs].detach()) for theirs, ours in key_map.items())

    conf0 = out["conf.0.bias"].shape[0]
    mbox = get_config(TORCHVISION_SSD_CONFIG)["mbox"]
    num_classes, rest = divmod(conf0, mbox[0])
    if rest or num_classes < 2:
        raise WeightsFileError(f"{source}: its first classification head has {conf0} outputs, "
                               f"not a multiple of {mbox[0]} anchors x (classes >= 2)")
    config = get_config(TORCHVISION_SSD_CONFIG, num_classes=num_classes)
    _check_shapes(out, config, source)

    if class_names is None:
        names = COCO91_CLASSES if num_classes == 91 else tuple(
            f"class_{i}" for i in range(1, num_classes))
    else:
        names = check_class_names(class_names, "class_names")
        if len(names) != num_classes - 1:
            raise WeightsFileError(
                f"{len(names)} class names were given but the model has {num_classes} outputs "
                f"(background included): give {num_classes - 1} names, in label order")
    meta = {"source": "torchvision.models.detection.ssd300_vgg16"}
    return WeightsFile(out, config, tuple(names), meta)


def _check_shapes(state: Mapping[str, torch.Tensor], config: Mapping[str, object],
                  source: str) -> None:
    """Compare every tensor with the layers the config builds (on the meta device: no memory)."""
    from torch import nn

    from ..model import BASE_CFG, add_extras, multibox, vgg

    with torch.device("meta"):
        base, extras, (loc, conf) = multibox(vgg(BASE_CFG), add_extras(config["extras"]),
                                             config["mbox"], int(config["num_classes"]))
        parts = {"vgg": nn.ModuleList(base), "extras": nn.ModuleList(extras),
                 "loc": nn.ModuleList(loc), "conf": nn.ModuleList(conf)}
    want = {f"{name}.{k}": tuple(v.shape) for name, module in parts.items()
            for k, v in module.state_dict().items()}
    want["L2Norm.weight"] = (want["vgg.21.weight"][0],)
    bad = [f"{k}: {list(state[k].shape)} (expected {list(v)})"
           for k, v in want.items() if tuple(state[k].shape) != v]
    if bad:
        raise WeightsFileError(f"{source} has tensors of the wrong shape for SSD300-VGG16 with "
                               f"{config['num_classes']} classes: {_list(bad, 6)}")
