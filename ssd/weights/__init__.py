"""Weight files: reading them safely, loading them into models, converting other layouts.

- :mod:`.loading`: safe reading (``weights_only=True``), whole-SSD and base-net loading.
- :mod:`.files`: files that carry their config and class names.
- :mod:`.vgg16`: torchvision's ImageNet VGG16 to the reduced-fc base net.
- :mod:`.torchvision_ssd`: torchvision's ``ssd300_vgg16`` to our SSD300 with its config.
- :mod:`.describe`: what a state dict holds.
- :mod:`.download`: verified, atomic downloads into the cache (``$SSD_HOME``).
- :mod:`.zoo`: the named pretrained weights (``fetch``, ``resolve_weights``, ...).
- :mod:`.finetune`: starting training from a trained SSD with other classes.
- :mod:`.cli`: ``python -m ssd.weights``.
"""

from .describe import describe_state_dict
from .download import ChecksumError, DownloadError, cache_dir
from .files import WeightsFile, read_weights_file, save_weights_file
from .loading import (
    BASENET_URL,
    SSD300_URL,
    TORCHVISION_VGG16_URL,
    LoadResult,
    WeightsFileError,
    WeightsMismatchError,
    load_base_weights,
    load_ssd_weights,
    load_state_dict_file,
    normalize_state_dict,
    unwrap_model,
)
from .torchvision_ssd import convert_torchvision_ssd
from .vgg16 import convert_vgg16, torchvision_vgg16_base
from .zoo import ZOO, ZooEntry, cached_path, fetch, pretrained_model, read_weights, resolve_weights


def main(argv=None) -> int:
    """Command-line entry point (``python -m ssd.weights -h``)."""
    from .cli import main as _main

    return _main(argv)


__all__ = [
    "BASENET_URL", "SSD300_URL", "TORCHVISION_VGG16_URL", "ZOO", "ChecksumError",
    "DownloadError", "LoadResult", "WeightsFile", "ZooEntry", "cache_dir", "cached_path",
    "fetch", "pretrained_model", "read_weights", "resolve_weights", "convert_torchvision_ssd",
    "WeightsFileError", "WeightsMismatchError", "convert_vgg16", "describe_state_dict",
    "load_base_weights", "load_ssd_weights", "load_state_dict_file", "main",
    "normalize_state_dict", "read_weights_file", "save_weights_file", "torchvision_vgg16_base",
    "unwrap_model",
]
