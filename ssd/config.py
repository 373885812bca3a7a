"""SSD configurations as plain data.

Each configuration is a dict that the builders (:func:`ssd.build_ssd`, :class:`ssd.PriorBox`,
the training loop) read. The numbers for ``voc300``/``coco300`` are those of ssd.pytorch; the
SSD512 ones come from the Caffe SSD release. ``extras`` lists the extra layers after conv7 as
``(out_channels, kernel_size, stride, padding)`` and ``mbox`` the number of boxes per cell of
each source.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

# BGR channel means subtracted from every input image.
MEANS = (104, 117, 123)

_EXTRAS_300 = [(256, 1, 1, 0), (512, 3, 2, 1), (128, 1, 1, 0), (256, 3, 2, 1),
               (128, 1, 1, 0), (256, 3, 1, 0), (128, 1, 1, 0), (256, 3, 1, 0)]
_EXTRAS_512 = [(256, 1, 1, 0), (512, 3, 2, 1), (128, 1, 1, 0), (256, 3, 2, 1),
               (128, 1, 1, 0), (256, 3, 2, 1), (128, 1, 1, 0), (256, 3, 2, 1),
               (128, 1, 1, 0), (256, 4, 1, 1)]

voc = {
    "name": "VOC",
    "num_classes": 21,
    "lr_steps": (80000, 100000, 120000),
    "max_iter": 120000,
    "feature_maps": [38, 19, 10, 5, 3, 1],
    "min_dim": 300,
    "steps": [8, 16, 32, 64, 100, 300],
    "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    "variance": [0.1, 0.2],
    "clip": True,
    "extras": _EXTRAS_300,
    "mbox": [4, 6, 6, 6, 4, 4],
}

coco = {
    **voc,
    "name": "COCO",
    "num_classes": 81,
    "lr_steps": (280000, 360000, 400000),
    "max_iter": 400000,
    "min_sizes": [21, 45, 99, 153, 207, 261],
    "max_sizes": [45, 99, 153, 207, 261, 315],
}

voc512 = {
    **voc,
    "name": "VOC512",
    "feature_maps": [64, 32, 16, 8, 4, 2, 1],
    "min_dim": 512,
    "steps": [8, 16, 32, 64, 128, 256, 512],
    "min_sizes": [35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8],
    "max_sizes": [76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
    "extras": _EXTRAS_512,
    "mbox": [4, 6, 6, 6, 6, 4, 4],
}

coco512 = {
    **voc512,
    "name": "COCO512",
    "num_classes": 81,
    "lr_steps": (280000, 360000, 400000),
    "max_iter": 400000,
    "min_sizes": [20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8],
    "max_sizes": [51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72],
}

# torchvision's ssd300_vgg16 (COCO, 91 outputs: the category ids 1..90 and background): the
# coco300 geometry (its DefaultBoxGenerator scales 0.07 .. 1.05 are these sizes over 300), with
# torchvision's prior clipping (widths and heights only) and post-processing. ``detect`` holds
# the options of ssd.detection.detect (see its DETECT_OPTIONS); ``normalize`` is its input rule,
# (rgb / scale - mean) / std (see ssd.data.normalize); ``channels_last: False`` makes Detector
# run the convolutions in torchvision's memory format, hence with its float rounding.
tv_coco300 = {
    **coco,
    "name": "COCO_TORCHVISION",
    "num_classes": 91,
    "clip": "wh",
    "normalize": {"scale": 255.0, "mean": (0.48235, 0.45882, 0.40784),
                  "std": (1 / 255, 1 / 255, 1 / 255)},
    "channels_last": False,
    "detect": {
        "candidates_per_class": 400,
        "max_per_image": 200,
        "clip_boxes": True,
        "keep_empty_boxes": True,
        "max_log_wh": 4.135166556742356,  # log(1000 / 16)
    },
}

CONFIGS: dict[str, dict[str, Any]] = {
    "voc": voc,
    "voc300": voc,
    "voc512": voc512,
    "coco": coco,
    "coco300": coco,
    "coco512": coco512,
    "tv_coco300": tv_coco300,
}


def get_config(cfg: str | Mapping[str, Any] | None = None, size: int | None = None,
               num_classes: int | None = None) -> dict[str, Any]:
    """Return a fresh copy of a configuration.

    Args:
        cfg: a name from :data:`CONFIGS` (``voc300``, ``voc512``, ``coco300``, ``coco512``,
            ``voc``, ``coco``, ``tv_coco300``), a config dict, or ``None`` for the VOC config of
            ``size``.
        size: input size (default 300), used when ``cfg`` is ``None``; checked against
            ``min_dim`` when given with a ``cfg``.
        num_classes: overrides the config's class count (custom datasets reuse VOC geometry).
    """
    if cfg is None:
        name = f"voc{size or 300}"
        if name not in CONFIGS:
            raise ValueError(f"unsupported SSD input size {size}: choose 300 or 512")
        out = copy.deepcopy(CONFIGS[name])
    elif isinstance(cfg, str):
        key = cfg.lower()
        if key not in CONFIGS:
            raise ValueError(f"unknown SSD config {cfg!r}: choose one of {sorted(CONFIGS)}")
        out = copy.deepcopy(CONFIGS[key])
    elif isinstance(cfg, Mapping):
        out = copy.deepcopy(dict(cfg))
    else:
        raise TypeError(f"cfg must be a config name, a dict or None, not {type(cfg).__name__}")
    if size is not None and out["min_dim"] != size:
        raise ValueError(
            f"config {out.get('name', '?')!r} is for {out['min_dim']}x{out['min_dim']} inputs, "
            f"but size={size} was asked for")
    if num_classes is not None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
        out["num_classes"] = int(num_classes)
    return out
