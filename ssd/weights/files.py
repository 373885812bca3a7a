"""Weight files that carry what is needed to use them: the config and the class names.

A file written by :func:`save_weights_file` is a dict ``{"model": state_dict, "ssd": meta}``
where ``meta`` holds plain data only (``format``, ``config`` dict, ``class_names`` list and
whatever else the writer adds, e.g. ``source``), so it loads with ``weights_only=True`` and
every loader that understands a ``'model'`` entry reads its state dict. Plain ssd.pytorch state
dicts have no ``meta``: :func:`read_weights_file` returns ``None`` for their config and names.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .loading import _SSD_HELP, PathLike, WeightsFileError, _read, normalize_state_dict

__all__ = ["META_KEY", "WEIGHTS_FORMAT", "WeightsFile", "read_weights_file", "save_weights_file"]

META_KEY = "ssd"
WEIGHTS_FORMAT = 1


@dataclass
class WeightsFile:
    """What :func:`read_weights_file` found in a file."""

    state_dict: OrderedDict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    class_names: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def save_weights_file(path: PathLike, state_dict: Mapping[str, torch.Tensor], *,
                      config: Mapping[str, Any], class_names: Sequence[str],
                      **meta: Any) -> Path:
    """Write ``state_dict`` with its ``config`` and foreground ``class_names`` atomically.

    Extra keyword arguments (plain data: str, numbers, lists, dicts) are stored in the meta
    entry too.
    """
    from ..io import atomic_save

    info = {"format": WEIGHTS_FORMAT, "config": _plain(dict(config)),
            "class_names": [str(n) for n in class_names], **_plain(meta)}
    payload = {"model": OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items()),
               META_KEY: info}
    return atomic_save(payload, path)


def read_weights_file(path: PathLike, map_location: Any = "cpu", *,
                      help_text: str = _SSD_HELP) -> WeightsFile:
    """Read any weights file :func:`ssd.weights.load_state_dict_file` reads, plus its meta
    entry when it has one."""
    raw = _read(path, map_location, help_text)
    state = normalize_state_dict(raw, repr(os.fspath(path)))
    meta = raw.get(META_KEY) if isinstance(raw, Mapping) else None
    if meta is None:
        return WeightsFile(state)
    if not isinstance(meta, Mapping):
        raise WeightsFileError(f"{os.fspath(path)!r}: its {META_KEY!r} entry is a "
                               f"{type(meta).__name__}, not a dict")
    meta = dict(meta)
    names = meta.get("class_names")
    return WeightsFile(state, meta.get("config"),
                       tuple(str(n) for n in names) if names is not None else None, meta)


def _plain(obj: Any) -> Any:
    """Tuples become lists so the meta round-trips through ``weights_only`` unchanged."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
