"""Weight files that carry what is needed to use them: the config and the class names.

A file written by :func:`save_weights_file` is a dict ``{"model": state_dict, "ssd": meta}``
where ``meta`` holds plain data only (``format``, ``config`` dict, ``class_names`` list and
whatever else the writer adds, e.g. ``source``), so it loads with ``weights_only=True`` and
every loader that understands a ``'model'`` entry reads its state dict. Plain ssd.pytorch state
dicts have no ``meta``: :func:`read_weights_file` returns ``None`` for their config and names.

Files that must stay plain state dicts (``train.py``'s ssd.pytorch-format ``.pth``, loaded by
ssd.pytorch's own loading code, a bare load plus ``load_state_dict``) carry the same ``meta`` in the
``OrderedDict``'s ``_metadata`` attribute under :data:`PLAIN_META_KEY` (see
:func:`with_plain_meta`): ``torch.save`` pickles that attribute, ``torch.load`` (also with
``weights_only=True``) restores it, and ``load_state_dict`` only reads ``_metadata`` entries
named after the model's submodules, which ``'ssd:meta'`` never is.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .loading import _SSD_HELP, PathLike, WeightsFileError, _read, normalize_state_dict

__all__ = ["META_KEY", "PLAIN_META_KEY", "WEIGHTS_FORMAT", "WeightsFile", "read_weights_file",
           "save_weights_file", "with_plain_meta"]

META_KEY = "ssd"
# A ':' cannot appear in a submodule path that load_state_dict looks up.
PLAIN_META_KEY = "ssd:meta"
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

    info = _meta(config, class_names, meta)
    payload = {"model": OrderedDict((k, v.detach().cpu()) for k, v in state_dict.items()),
               META_KEY: info}
    return atomic_save(payload, path)


def with_plain_meta(state_dict: Mapping[str, torch.Tensor], *,
                    config: Mapping[str, Any] | None, class_names: Sequence[str] | None,
                    **meta: Any) -> OrderedDict[str, torch.Tensor]:
    """``state_dict`` as an ``OrderedDict`` carrying ``config``, ``class_names`` and ``meta``
    in its ``_metadata`` (a plain state dict for every loader; see the module docstring).
    Without a config or class names it carries nothing."""
    out = OrderedDict(state_dict.items())
    if config is not None and class_names is not None:
        out._metadata = OrderedDict([(PLAIN_META_KEY, _meta(config, class_names, meta))])
    return out


def _meta(config: Mapping[str, Any], class_names: Sequence[str],
          meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": WEIGHTS_FORMAT, "config": _plain(dict(config)),
            "class_names": [str(n) for n in class_names], **_plain(dict(meta))}


def _find_meta(raw: Any) -> Any:
    """The meta of a :func:`save_weights_file` file, a :func:`with_plain_meta` state dict,
    or a training checkpoint (its ``config`` and ``class_names`` entries); else ``None``."""
    if not isinstance(raw, Mapping):
        return None
    if META_KEY in raw:
        return raw[META_KEY]
    plain = getattr(raw, "_metadata", None)
    if isinstance(plain, Mapping) and PLAIN_META_KEY in plain:
        return plain[PLAIN_META_KEY]
    if raw.get("format") == "ssd-train-checkpoint" and "class_names" in raw:
        return {"config": raw.get("config"), "class_names": raw["class_names"]}
    return None


def read_weights_file(path: PathLike, map_location: Any = "cpu", *,
                      help_text: str = _SSD_HELP) -> WeightsFile:
    """Read any weights file :func:`ssd.weights.load_state_dict_file` reads, plus its meta
    entry when it has one."""
    raw = _read(path, map_location, help_text)
    state = normalize_state_dict(raw, repr(os.fspath(path)))
    meta = _find_meta(raw)
    if meta is None:
        return WeightsFile(state)
    if not isinstance(meta, Mapping):
        raise WeightsFileError(f"{os.fspath(path)!r}: its {META_KEY!r} meta is a "
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
