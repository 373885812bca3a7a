"""Reading weight files safely and loading them into models: whole SSDs and the VGG16 base."""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence, Union

import torch
from torch import nn

__all__ = [
    "BASENET_URL", "SSD300_URL", "TORCHVISION_VGG16_URL", "LoadResult", "WeightsFileError",
    "WeightsMismatchError", "load_base_weights", "load_ssd_weights", "load_state_dict_file",
    "normalize_state_dict", "unwrap_model",
]

PathLike = Union[str, "os.PathLike[str]"]

BASENET_URL = "https://s3.amazonaws.com/amdegroot-models/vgg16_reducedfc.pth"
SSD300_URL = "https://s3.amazonaws.com/amdegroot-models/ssd300_mAP_77.43_v2.pth"
TORCHVISION_VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"

_SSD_HELP = (f"ssd.pytorch's trained SSD300 (VOC, 21 classes) is at {SSD300_URL}: download it "
             f"into weights/, or get a trained model by its zoo name with `python -m ssd.weights "
             f"download ssd300_voc0712` (VOC) or `... download ssd300_coco` (torchvision's COCO "
             f"SSD300); eval.py/test.py also take the name as --trained_model; see "
             f"weights/README.md")
_BASE_HELP = (f"download ssd.pytorch's base net from {BASENET_URL} into weights/, or convert "
              f"torchvision's ImageNet VGG16 ({TORCHVISION_VGG16_URL}) with `python -m "
              f"ssd.weights convert-vgg16 vgg16-397923af.pth weights/vgg16_reducedfc.pth` "
              f"(train.py: --basenet torchvision-vgg16 does the download and conversion)")

# Where a training checkpoint or a wrapper keeps the model's state dict.
_NESTED_KEYS = ("model", "state_dict", "model_state_dict", "net")
# Prefixes added by DataParallel / DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

class WeightsFileError(ValueError):
    """A file that is not a readable PyTorch state dict (or not the expected kind)."""


class WeightsMismatchError(RuntimeError):
    """A state dict whose keys or shapes do not fit the model."""


class LoadResult(NamedTuple):
    """What a non-strict load left out (all empty after a strict load)."""
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, expected, got)


# ----------------------------------------------------------------------------- reading files

def _strip_wrappers(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    # torch.compile on a submodule leaves `_orig_mod.` inside the key.
    return key.replace("._orig_mod.", ".")


def normalize_state_dict(obj: Any, source: str = "state dict") -> OrderedDict[str, torch.Tensor]:
    """Return the model state dict inside ``obj`` with wrapper prefixes removed.

    ``obj`` may be a plain state dict or a checkpoint dict keeping it under ``'model'`` or
    ``'state_dict'``. ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile)
    prefixes are stripped. ``source`` names the origin in error messages.
    """
    if isinstance(obj, nn.Module):
        raise WeightsFileError(f"{source} holds a whole pickled model, not a state dict")
    if not isinstance(obj, Mapping):
        raise WeightsFileError(f"{source} holds a {type(obj).__name__}, not a state dict")
    seen = set()
    while not _all_tensors(obj):
        nested = next((k for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if nested is None or id(obj) in seen:
            bad = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
            raise WeightsFileError(
                f"{source} is not a state dict: entry {bad!r} holds a {type(obj[bad]).__name__} "
                f"and there is no 'model' or 'state_dict' entry (keys: {_preview(obj)})")
        seen.add(id(obj))
        obj = obj[nested]
    if not obj:
        raise WeightsFileError(f"{source} is an empty state dict")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise WeightsFileError(f"{source}: state dict key {key!r} is not a string")
        new = _strip_wrappers(key)
        if new in out:
            raise WeightsFileError(f"{source}: keys {key!r} and another both map to {new!r}")
        out[new] = value
    return out


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _preview(obj: Mapping[Any, Any], n: int = 8) -> str:
    keys = [repr(k) for k in list(obj)[:n]]
    return ", ".join(keys) + (", ..." if len(obj) > n else "")


def _read(path: PathLike, map_location: Any, help_text: str) -> Any:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"weights file {os.fspath(path)!r} not found; {help_text}")
    if p.is_dir():
        raise WeightsFileError(f"{os.fspath(path)!r} is a directory, not a weights file")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean the same to the user
        raise WeightsFileError(_refusal_message(p, e)) from e


# PyTorch's safe loader names the callable it refused in one of these forms.
_BLOCKED_GLOBAL = (re.compile(r"unsupported GLOBAL (\S+?) whose module \S+ is blocked"),
                   re.compile(r"Unsupported global: GLOBAL (\S+?) was not an allowed global"))
_PICKLE_MAGIC = b"\x80"  # protocol 2+ pickles start with PROTO


def _refusal_message(path: Path, e: Exception) -> str:
    """Why the safe loader refused ``path``, in the user's terms.

    PyTorch's own text suggests ``weights_only=False``, which would run whatever the file
    holds: it is never repeated. A file that pickles callables gets a message naming them and
    saying that nothing was run.
    """
    text = str(e)
    blocked = [m.group(1) for rx in _BLOCKED_GLOBAL for m in rx.finditer(text)]
    if not blocked and "Unsupported operand" in text:
        blocked = _pickled_globals(path)  # a plain pickle, not written by torch.save
    if blocked:
        names = ", ".join(dict.fromkeys(blocked))
        return (f"refused to load {os.fspath(path)!r}: it contains pickled Python code (a "
                f"call to {names}), which has not been and will not be executed: weights are "
                f"read only with PyTorch's safe loader, which accepts tensors and plain data. "
                f"Use weights from a source you trust; if you made this file, save only the "
                f"model's state_dict() (and plain data) in it")
    detail = _load_error_detail(e)
    return (f"could not read {os.fspath(path)!r}: not a PyTorch weights file, or a corrupt "
            f"one ({type(e).__name__}: {detail})")


def _pickled_globals(path: Path, limit: int = 1 << 20) -> list[str]:
    """The callables a plain pickle file would import, found by parsing (never running) its
    first ``limit`` bytes; ``[]`` when it is not a readable pickle."""
    import pickletools

    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return []
    if not data.startswith(_PICKLE_MAGIC):
        return []
    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # truncated or not a pickle after all: report what was seen
        pass
    return found


def _load_error_detail(e: Exception) -> str:
    """The informative part of a torch.load error, without its advice to load unsafely."""
    text = str(e).strip()
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if found:
        return found.group(1).strip().split(". Please use")[0]
    lines = [line for line in text.splitlines()
             if line.strip() and "weights_only" not in line and "Weights only" not in line]
    return lines[0].strip() if lines else type(e).__name__


def load_state_dict_file(path: PathLike, map_location: Any = "cpu",
                         *, help_text: str = _SSD_HELP) -> OrderedDict[str, torch.Tensor]:
    """Read a state dict from ``path`` safely (``weights_only=True``).

    Accepts a plain state dict or a checkpoint dict with a ``'model'``/``'state_dict'``
    entry; strips ``module.`` and ``_orig_mod.`` prefixes.

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where to get weights).
        WeightsFileError: the file is not a readable state dict.
    """
    return normalize_state_dict(_read(path, map_location, help_text), repr(os.fspath(path)))


# ----------------------------------------------------------------------------- loading models

def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _compare(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
             ) -> LoadResult:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [(k, tuple(expected[k].shape), tuple(got[k].shape))
                  for k in expected if k in got and expected[k].shape != got[k].shape]
    return LoadResult(missing, unexpected, mismatched)


def _list(keys: Sequence[str], n: int = 12) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def _format_mismatch(result: LoadResult, source: str, target: str, hints: Sequence[str]) -> str:
    lines = [f"{source} does not fit {target}:"]
    if result.missing:
        lines.append(f"  missing keys (in the model, not in the file): {_list(result.missing)}")
    if result.unexpected:
        lines.append(f"  unexpected keys (in the file, not in the model): "
                     f"{_list(result.unexpected)}")
    if result.mismatched:
        lines.append("  shape mismatches (key: model expects -> file has):")
        for key, want, have in result.mismatched[:12]:
            lines.append(f"    {key}: {list(want)} -> {list(have)}")
        if len(result.mismatched) > 12:
            lines.append(f"    ... ({len(result.mismatched)} in all)")
    lines += [f"  hint: {h}" for h in hints]
    return "\n".join(lines)


# How to fix a class-count mismatch depends on where the weights were given ({n}: the file's
# class count, background included; {k} = {n} - 1 object classes; {m}: the model's).
_CLASS_COUNT_FIX = {
    "python": "build the model with num_classes={n} (build_ssd(..., num_classes={n})), or give "
              "Detector.from_checkpoint the {k} class names it was trained on (classes=[...] "
              "or a class-list file)",
    "cli": "the model gets its class count from the dataset's classes: pass --classes with the "
           "{k} class names the file was trained on, in training order (a class-list file, one "
           "name per line, or comma-separated); --config only chooses the geometry "
           "(voc300, coco300, voc512, ...)",
}
# Well-known class counts and the flags that give them on the command line.
_KNOWN_COUNTS = {21: "the 20 VOC classes: the default of --dataset VOC",
                 81: "COCO's 80 classes: --dataset COCO --config coco300",
                 91: "torchvision's 90 COCO category slots: --dataset COCO --config tv_coco300"}
HINT_CONTEXTS = tuple(_CLASS_COUNT_FIX)


def _foreign_layout_hint(state: Mapping[str, torch.Tensor]) -> str | None:
    """A hint for well-known files that are not SSD state dicts in our layout."""
    keys = list(state)
    if keys and all(re.fullmatch(r"\d+\.(weight|bias)", k) for k in keys):
        return ("this looks like a VGG base net file (keys 0.weight ...); load it with "
                "load_base_weights / train.py --basenet, not as a whole SSD")
    if any(k.startswith("head.classification_head.") for k in keys) and \
            any(k.startswith("backbone.") for k in keys):
        return ("this is a torchvision ssd300_vgg16 state dict: convert it first with `python "
                "-m ssd.weights convert-torchvision-ssd IN.pth OUT.pth` (OUT carries "
                "torchvision's config and class names) and load OUT")
    if any(k.startswith("features.") for k in keys) and \
            any(k.startswith("classifier.") for k in keys):
        return ("this is torchvision's ImageNet VGG16 classifier, not a trained SSD: make the "
                "SSD base net from it with `python -m ssd.weights convert-vgg16 IN.pth "
                "weights/vgg16_reducedfc.pth` and train from that (train.py --basenet "
                "weights/vgg16_reducedfc.pth)")
    return None


def _ssd_hints(model: nn.Module, state: Mapping[str, torch.Tensor],
               result: LoadResult, context: str = "python") -> list[str]:
    if context not in _CLASS_COUNT_FIX:
        raise ValueError(f"hint context must be one of {HINT_CONTEXTS}, got {context!r}")
    foreign = _foreign_layout_hint(state)
    if foreign:
        return [foreign]
    hints = []
    n_heads = len({k.split(".")[1] for k in state if re.fullmatch(r"loc\.\d+\.weight", k)})
    model_heads = len(getattr(model, "loc", ()))
    if n_heads and model_heads and n_heads != model_heads:
        size = {6: 300, 7: 512}.get(n_heads)
        hints.append(f"the file has {n_heads} sources (SSD{size or '?'}) and the model "
                     f"{model_heads}: build the model with the matching size / --config")
    conf0, mbox = state.get("conf.0.weight"), getattr(model, "cfg", {}).get("mbox")
    model_classes = getattr(model, "num_classes", None)
    if any(k.startswith("conf.") for k, _, _ in result.mismatched) and conf0 is not None and mbox:
        n, rest = divmod(conf0.shape[0], mbox[0])
        if not rest and n != model_classes:
            fix = _CLASS_COUNT_FIX[context].format(n=n, k=n - 1, m=model_classes)
            known = f" ({_KNOWN_COUNTS[n]})" if context == "cli" and n in _KNOWN_COUNTS else ""
            hints.append(f"the file was trained for {n} classes (background included) and the "
                         f"model has {model_classes}: {fix}{known}")
    return hints


def load_ssd_weights(model: nn.Module,
                     path_or_state_dict: PathLike | Mapping[str, Any],
                     strict: bool = True, *, hints: str = "python") -> LoadResult:
    """Load a whole-SSD checkpoint into ``model`` (on the model's device and dtype).

    ``path_or_state_dict`` is a file or an in-memory dict, in any form
    :func:`load_state_dict_file` accepts. With ``strict`` any missing or unexpected key or
    shape mismatch raises :class:`WeightsMismatchError` listing them all; without it the
    matching tensors are loaded, the others skipped and reported in the returned
    :class:`LoadResult` (e.g. to fine-tune a 21-class checkpoint on another class count).
    ``hints`` says who gave the weights, so that the error's advice fits: ``"python"`` (the
    API) or ``"cli"`` (eval.py / test.py flags).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the state dict"
        state = normalize_state_dict(path_or_state_dict, source)
    else:
        source = repr(os.fspath(path_or_state_dict))
        state = load_state_dict_file(path_or_state_dict)
    target = unwrap_model(model)
    result = _compare(target.state_dict(), state)
    skip = {k for k, _, _ in result.mismatched} | set(result.unexpected)
    loadable = OrderedDict((k, v) for k, v in state.items() if k not in skip)
    # Even a non-strict load that would load nothing is a wrong file, not a partial fit.
    if (strict and any(result)) or not loadable:
        raise WeightsMismatchError(_format_mismatch(
            result, source, f"the {type(target).__name__} model",
            _ssd_hints(target, state, result, hints)))
    target.load_state_dict(loadable, strict=False)
    return result


def missing_weights_message(path: PathLike) -> str:
    """What to say when a trained-weights file does not exist: where to get one."""
    return f"weights file {os.fspath(path)!r} not found; {_SSD_HELP}"


def _base_state(state: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    if any(k.startswith("vgg.") for k in state):
        return OrderedDict((k[len("vgg."):], v) for k, v in state.items()
                           if k.startswith("vgg."))
    return OrderedDict(state)


def load_base_weights(model: nn.Module,
                      path_or_state_dict: PathLike | Mapping[str, Any]) -> None:
    """Load the VGG16 base net (``vgg16_reducedfc.pth``: ``0.weight`` ... ``33.bias``).

    Loads strictly into ``model.vgg`` (``model`` may also be the VGG ModuleList itself). A
    ``vgg.``-prefixed dict (or a whole SSD checkpoint, whose ``vgg.*`` part is taken) works too.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the base net state dict"
        state = normalize_state_dict(path_or_state_dict, source)
    else:
        source = repr(os.fspath(path_or_state_dict))
        state = load_state_dict_file(path_or_state_dict, help_text=_BASE_HELP)
    target = unwrap_model(model)
    base = getattr(target, "vgg", target)
    state = _base_state(state)
    result = _compare(base.state_dict(), state)
    if any(result):
        hints = []
        if any(k.startswith(("fc6", "fc7", "features.", "classifier.")) for k in state):
            hints.append("this looks like a torchvision VGG16 file: convert it first with "
                         "`python -m ssd.weights convert-vgg16 IN.pth OUT.pth`")
        raise WeightsMismatchError(_format_mismatch(result, source, "the VGG base (model.vgg)",
                                                    hints))
    base.load_state_dict(state)
