"""The model zoo: named weights, where they come from, how to check and convert them.

>>> from ssd.weights.zoo import fetch, pretrained_model
>>> path = fetch("ssd300_voc0712")          # downloads once into $SSD_HOME, then reuses it
>>> net = pretrained_model("ssd300_coco")   # a test-phase SSD with the converted weights

Every entry is plain data (:class:`ZooEntry`). A download keeps the published file under its
own name in :func:`~ssd.weights.download.cache_dir` (so a file fetched by hand can be put
there); entries with a converter also get the converted file beside it (``ssd-<name>.pth``,
written once, with its config and class names when the converter gives them).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

from .download import DownloadError, cache_dir, download_file, verify_sha256

__all__ = ["CONVERTERS", "ZOO", "ZooEntry", "cached_path", "download_urls", "entry", "fetch",
           "pretrained_model", "read_weights", "resolve_weights"]

PathLike = Union[str, "os.PathLike[str]"]

# Converter names -> "module:function", imported only when a download needs them.
CONVERTERS: dict[str, str] = {
    "torchvision_vgg16": "ssd.weights.vgg16:convert_vgg16",
    "torchvision_ssd": "ssd.weights.torchvision_ssd:convert_torchvision_ssd",
}

_VOC_NAMES = "ssd.data.classes:VOC_CLASSES"
_SSD_PYTORCH = "https://github.com/amdegroot/ssd.pytorch#performance"
_TV_SSD_DOCS = "https://pytorch.org/vision/stable/models/generated/" \
               "torchvision.models.detection.ssd300_vgg16.html"
_TV_VGG_DOCS = "https://pytorch.org/vision/stable/models/generated/torchvision.models.vgg16.html"


@dataclass(frozen=True)
class ZooEntry:
    """One named set of weights.

    Attributes:
        name: the zoo name (``ssd300_coco``).
        kind: ``'ssd'`` (a whole detector) or ``'basenet'`` (the VGG16 base for training).
        urls: where the published file is, mirrors in order.
        filename: the published file's name (kept under it in the cache).
        sha256: its SHA-256, full or a prefix (torchvision's file names carry 8 hex digits);
            ``None`` where none is published (ssd.pytorch's files; the table was written
            offline, so their digests could not be computed here): a download is then only
            checked to be complete (``Content-Length``) and a readable PyTorch file.
        converter: a :data:`CONVERTERS` name, or ``None`` when the file is used as it is.
        config: the config name the weights need (``None``: the converted file carries it).
        class_names: ``"module:ATTRIBUTE"`` naming the foreground class names (``None``: the
            converted file carries them, or a base net has none).
        metric: what the weights score.
        metric_source: where that number is published.
        source: who publishes the file.
        licence: the licence of the files' publisher.
        size_mib: the published file's size (torchvision's declared size; for ssd.pytorch's
            files the float32 tensor bytes of the architecture, which the files exceed by
            their pickle framing only).
    """

    name: str
    kind: str
    urls: tuple[str, ...]
    filename: str
    sha256: str | None
    converter: str | None
    config: str | None
    class_names: str | None
    metric: str
    metric_source: str
    source: str
    licence: str
    size_mib: float

    @property
    def url(self) -> str:
        """The publisher's (first) URL."""
        return self.urls[0]

    @property
    def converted_filename(self) -> str | None:
        return f"ssd-{self.name}.pth" if self.converter else None

    def classes(self) -> tuple[str, ...] | None:
        """The foreground class names (imported on demand), or ``None``."""
        return tuple(_lookup(self.class_names)) if self.class_names else None

    def convert(self, state: Mapping[str, Any]) -> Any:
        """Run the converter (a :class:`~ssd.weights.files.WeightsFile` or a state dict)."""
        if self.converter is None:
            raise ValueError(f"{self.name} needs no conversion")
        return _lookup(CONVERTERS[self.converter])(state)


def _lookup(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


_ENTRIES = (
    ZooEntry(
        name="ssd300_coco", kind="ssd",
        urls=("https://download.pytorch.org/models/ssd300_vgg16_coco-b556d3b4.pth",),
        filename="ssd300_vgg16_coco-b556d3b4.pth", sha256="b556d3b4",
        converter="torchvision_ssd", config=None, class_names=None,
        metric="COCO val2017 box AP 25.1", metric_source=_TV_SSD_DOCS,
        source="torchvision (SSD300_VGG16_Weights.COCO_V1)", licence="BSD-3-Clause",
        size_mib=135.988),
    ZooEntry(
        name="ssd300_voc0712", kind="ssd",
        urls=("https://s3.amazonaws.com/amdegroot-models/ssd300_mAP_77.43_v2.pth",),
        filename="ssd300_mAP_77.43_v2.pth", sha256=None, converter=None,
        config="voc300", class_names=_VOC_NAMES,
        metric="VOC2007 test mAP 77.43 (trained on VOC07+12)", metric_source=_SSD_PYTORCH,
        source="ssd.pytorch", licence="MIT", size_mib=100.27),
    ZooEntry(
        name="ssd300_voc0712_caffe", kind="ssd",
        urls=("https://s3.amazonaws.com/amdegroot-models/ssd_300_VOC0712.pth",),
        filename="ssd_300_VOC0712.pth", sha256=None, converter=None,
        config="voc300", class_names=_VOC_NAMES,
        metric="original Caffe SSD300 (VOC07+12) converted; the SSD paper reports 77.2 VOC2007 "
               "test mAP for it", metric_source=_SSD_PYTORCH,
        source="ssd.pytorch (from Caffe SSD)", licence="MIT", size_mib=100.27),
    ZooEntry(
        name="vgg16_reducedfc", kind="basenet",
        urls=("https://s3.amazonaws.com/amdegroot-models/vgg16_reducedfc.pth",),
        filename="vgg16_reducedfc.pth", sha256=None, converter=None, config=None,
        class_names=None, metric="ImageNet VGG16, fc6/fc7 reduced to conv6/conv7",
        metric_source=_SSD_PYTORCH, source="ssd.pytorch", licence="MIT", size_mib=78.14),
    ZooEntry(
        name="vgg16_imagenet", kind="basenet",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        filename="vgg16-397923af.pth", sha256="397923af", converter="torchvision_vgg16",
        config=None, class_names=None,
        metric="ImageNet-1K top-1 71.592 (before the fc6/fc7 reduction)",
        metric_source=_TV_VGG_DOCS, source="torchvision (VGG16_Weights.IMAGENET1K_V1)",
        licence="BSD-3-Clause", size_mib=527.796),
)

ZOO: Mapping[str, ZooEntry] = {e.name: e for e in _ENTRIES}


def entry(name: str, zoo: Mapping[str, ZooEntry] | None = None) -> ZooEntry:
    """The entry called ``name``; an unknown name raises ``KeyError`` listing the names."""
    table = ZOO if zoo is None else zoo
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"no pretrained weights called {name!r}; the zoo has: "
                       f"{', '.join(table)}") from None


def _paths(e: ZooEntry) -> tuple[Path, Path]:
    """(the published file, the file the model loads) in the cache."""
    raw = cache_dir() / e.filename
    return raw, (cache_dir() / e.converted_filename) if e.converted_filename else raw


def download_urls(e: ZooEntry) -> tuple[str, ...]:
    """Where ``e`` is fetched from, in order: ``$SSD_MIRROR`` (base URLs, comma or space
    separated, holding the files under their published names; e.g. a company mirror), then
    the publisher's URLs."""
    mirrors = [m for m in re.split(r"[,\s]+", os.environ.get("SSD_MIRROR", "")) if m]
    return tuple(f"{m.rstrip('/')}/{e.filename}" for m in mirrors) + tuple(e.urls)


def cached_path(name: str) -> Path | None:
    """The ready-to-load file of ``name`` if it is in the cache, else ``None``."""
    final = _paths(entry(name))[1]
    return final if final.is_file() else None


def _check_loadable(path: Path) -> None:
    """Only for files without a published checksum: a complete PyTorch file reads."""
    from .loading import load_state_dict_file

    load_state_dict_file(path, help_text="")


def fetch(name: str, progress: bool = True) -> Path:
    """Make ``name`` ready to load and return its path; no network access when it is cached.

    Downloads the published file into the cache (checksum verified where one is published;
    otherwise checked to be a complete PyTorch file) from :func:`download_urls`, then converts
    it when the entry says so.

    Raises:
        KeyError: no such entry.
        DownloadError: offline or the server refused; the message names the URL and the path
            where a file downloaded elsewhere can be put.
        ChecksumError: the download (or a file put in the cache by hand) is not the
            published file.
    """
    e = entry(name)
    raw, final = _paths(e)
    if final.is_file():
        return final
    if not raw.is_file():
        try:
            download_file(download_urls(e), raw, sha256=e.sha256, progress=progress,
                          check=None if e.sha256 else _check_loadable)
        except DownloadError as err:
            raise type(err)(f"{name}: {err}") from err
    if e.converter is None:
        return final
    # A file someone put in the cache by hand is checked once, before it is converted.
    verify_sha256(raw, e.sha256)
    _convert(e, raw, final)
    return final


def _convert(e: ZooEntry, raw: Path, final: Path) -> None:
    from ..io import atomic_save
    from .files import WeightsFile, save_weights_file
    from .loading import load_state_dict_file

    out = e.convert(load_state_dict_file(raw, help_text=""))
    source = {"zoo_name": e.name, "source_url": e.urls[0], "source_sha256": e.sha256}
    if isinstance(out, WeightsFile):
        if out.config is None or out.class_names is None:
            raise ValueError(f"converter {e.converter!r} gave no config or class names")
        save_weights_file(final, out.state_dict, config=out.config, class_names=out.class_names,
                          **{**out.meta, **source})
    else:
        atomic_save(out, final)


def resolve_weights(spec: PathLike) -> Path:
    """A weights argument as a file: an existing path stays a path; a zoo name is fetched.

    Raises:
        FileNotFoundError: ``spec`` is neither a file nor a zoo name (the message lists the
            names).
    """
    path = Path(os.fspath(spec)).expanduser()
    if path.is_file():
        return path
    name = os.fspath(spec)
    if name in ZOO:
        return fetch(name)
    if path.is_dir():
        raise FileNotFoundError(f"{name!r} is a directory, not a weights file")
    raise FileNotFoundError(f"weights {name!r}: no such file, and not a pretrained model name "
                            f"(the zoo has: {', '.join(ZOO)}; `python -m ssd.weights list`)")


def read_weights(spec: PathLike, map_location: Any = "cpu") -> Any:
    """:func:`~ssd.weights.files.read_weights_file` of a path or zoo name; for a zoo name,
    the entry's config and class names fill in what the file does not carry."""
    from dataclasses import replace

    from .files import read_weights_file

    found = read_weights_file(resolve_weights(spec), map_location)
    name = os.fspath(spec)
    if name in ZOO and not Path(name).expanduser().is_file():
        e = ZOO[name]
        found = replace(found, config=found.config or e.config,
                        class_names=found.class_names or e.classes())
    return found


def pretrained_model(name: str, phase: str = "test", device: Any = "auto",
                     **detect_kwargs: Any) -> Any:
    """The :class:`~ssd.model.SSD` with the weights ``name`` (fetched when needed), in eval
    mode on ``device`` (``'auto'`` picks CUDA when available). ``detect_kwargs``
    (``top_k``, ``conf_thresh``, ``nms_thresh``, ...) go to :func:`~ssd.model.build_ssd`."""
    from ..evaluation.inference import resolve_device
    from ..model import build_ssd
    from .loading import load_ssd_weights

    e = entry(name)
    if e.kind != "ssd":
        raise ValueError(f"{name} is a {e.kind}, not a detector: use it as train.py --basenet")
    found = read_weights(name)
    model = build_ssd(phase, cfg=found.config,
                      num_classes=len(found.class_names) + 1 if found.class_names else None,
                      **detect_kwargs)
    load_ssd_weights(model, found.state_dict)
    return model.to(resolve_device(device)).eval()

