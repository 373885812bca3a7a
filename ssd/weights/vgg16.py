"""torchvision's ImageNet VGG16 turned into SSD's reduced-fc base net."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Mapping

import torch

from .loading import (
    BASENET_URL,
    WeightsFileError,
    _list,
    load_state_dict_file,
    normalize_state_dict,
)

__all__ = ["convert_vgg16", "torchvision_vgg16_base"]

# torchvision vgg16 `features` indices of the 13 convs; the same indices in our `vgg` list.
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
_CONV6, _CONV7 = 31, 33


def convert_vgg16(tv_state_dict: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Turn torchvision's ``vgg16`` state dict into SSD's reduced-fc base net.

    conv1_1 ... conv5_3 (``features.{0..28}``) keep their indices. fc6 (``[4096, 25088]``) is
    seen as a 7x7 conv and subsampled to conv6 ``[1024, 512, 3, 3]`` (every 4th filter, every
    3rd tap: ``conv6[o, :, i, j] == fc6[4o, :, 3i, 3j]``; conv6 is dilated by 6 to keep the
    receptive field); fc7 keeps every 4th row and column as conv7 ``[1024, 1024, 1, 1]``;
    biases keep every 4th entry. Returns keys ``0.weight`` ... ``33.bias`` (our ``vgg`` list);
    every tensor owns its memory, so saving it does not drag fc6 along.
    """
    sd = normalize_state_dict(tv_state_dict, "the torchvision VGG16 state dict")
    expected = {f"features.{i}.{p}" for i in _VGG16_CONVS for p in ("weight", "bias")}
    expected |= {f"classifier.{i}.{p}" for i in (0, 3) for p in ("weight", "bias")}
    missing = sorted(expected - set(sd))
    if missing:
        raise WeightsFileError(
            f"not a torchvision vgg16 state dict (batch-norm VGG is not supported): missing "
            f"{_list(missing)}")
    fc6_w, fc6_b = sd["classifier.0.weight"], sd["classifier.0.bias"]
    fc7_w, fc7_b = sd["classifier.3.weight"], sd["classifier.3.bias"]
    for key, want in (("classifier.0.weight", (4096, 512 * 7 * 7)), ("classifier.0.bias", (4096,)),
                      ("classifier.3.weight", (4096, 4096)), ("classifier.3.bias", (4096,))):
        if tuple(sd[key].shape) != want:
            raise WeightsFileError(f"not a torchvision vgg16 state dict: {key} has shape "
                                   f"{list(sd[key].shape)}, expected {list(want)}")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i in _VGG16_CONVS:
        out[f"{i}.weight"] = sd[f"features.{i}.weight"].detach().clone()
        out[f"{i}.bias"] = sd[f"features.{i}.bias"].detach().clone()
    out[f"{_CONV6}.weight"] = fc6_w.detach().reshape(4096, 512, 7, 7)[::4, :, ::3, ::3].clone(
        memory_format=torch.contiguous_format)
    out[f"{_CONV6}.bias"] = fc6_b.detach()[::4].clone()
    out[f"{_CONV7}.weight"] = fc7_w.detach()[::4, ::4].reshape(1024, 1024, 1, 1).clone(
        memory_format=torch.contiguous_format)
    out[f"{_CONV7}.bias"] = fc7_b.detach()[::4].clone()
    return out


def torchvision_vgg16_base(download: bool = True) -> OrderedDict[str, torch.Tensor]:
    """torchvision's ImageNet VGG16 (``IMAGENET1K_V1``) converted by :func:`convert_vgg16`.

    Uses torch.hub's cache (``$TORCH_HOME/hub/checkpoints``); downloads the file there when it
    is missing and ``download`` is true.

    Raises:
        FileNotFoundError: not cached and ``download`` is false.
        RuntimeError: the download failed (the message says how to place the file by hand).
    """
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    manual = (f"download {url} on a machine with internet access and either put it at "
              f"{cached} or run `python -m ssd.weights convert-vgg16 {os.path.basename(url)} "
              f"weights/vgg16_reducedfc.pth`; or use ssd.pytorch's base net {BASENET_URL}")
    if cached.exists():
        return convert_vgg16(load_state_dict_file(cached))
    if not download:
        raise FileNotFoundError(f"torchvision's VGG16 weights are not in {cached} and "
                                f"download=False: {manual}")
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True,
                                                   weights_only=True)
    except Exception as e:
        raise RuntimeError(f"downloading torchvision's VGG16 weights from {url} failed "
                           f"({type(e).__name__}: {e}); {manual}") from e
    return convert_vgg16(state)
