"""The network input of one image, by the rule its config names.

ssd.pytorch subtracts BGR pixel means from the resized uint8 image (:data:`ssd.config.MEANS`);
torchvision's detectors take RGB in [0, 1] and normalise with a mean and std. A config's
``normalize`` entry, ``{"scale": s, "mean": [r, g, b], "std": [r, g, b]}``, selects the second:
``(rgb / s - mean) / std``, computed with torchvision's operations in its order so that the same
pixels give the same float32 input. Either way the image is first resized with cv2 (bilinear,
uint8), as every other input of this project is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["input_transform"]

ToInput = Callable[[np.ndarray], torch.Tensor]


def _mean_subtraction(size: int, mean: Sequence[float]) -> ToInput:
    from .base import to_chw_rgb_tensor
    from .transforms import base_transform

    def apply(bgr: np.ndarray) -> torch.Tensor:
        return to_chw_rgb_tensor(base_transform(bgr, size, mean))

    return apply


def _scale_mean_std(size: int, rule: Mapping[str, Any]) -> ToInput:
    import cv2

    scale = float(rule["scale"])
    mean = torch.tensor([float(v) for v in rule["mean"]], dtype=torch.float32)[:, None, None]
    std = torch.tensor([float(v) for v in rule["std"]], dtype=torch.float32)[:, None, None]
    if mean.numel() != 3 or std.numel() != 3 or not bool((std > 0).all()) or scale <= 0:
        raise ValueError(f"config normalize must have a positive scale and 3 means and 3 "
                         f"positive stds (RGB), got {dict(rule)!r}")

    def apply(bgr: np.ndarray) -> torch.Tensor:
        img = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)
        rgb = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1)
        return ((rgb.float() / scale - mean) / std).contiguous()

    return apply


def input_transform(cfg: Mapping[str, Any], size: int,
                    mean: Sequence[float] | None = None) -> ToInput:
    """``bgr uint8 [H, W, 3] -> float32 [3, size, size]`` network input for ``cfg``.

    ``mean`` (BGR) forces ssd.pytorch's mean subtraction with those means; otherwise the
    config's ``normalize`` rule when it has one, else mean subtraction with
    :data:`ssd.config.MEANS`.
    """
    from ..config import MEANS

    rule = cfg.get("normalize")
    if mean is not None or rule is None:
        return _mean_subtraction(size, tuple(float(m) for m in (mean or MEANS)))
    return _scale_mean_std(size, rule)
