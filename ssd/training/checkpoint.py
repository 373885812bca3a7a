"""Training checkpoints: full state for exact resumption, written atomically.

A training checkpoint (``<save_folder>/ssd300_VOC_<iter>.ckpt``) is a dict holding the model,
optimizer, GradScaler and schedule states, the iteration and data position, every process's
RNG states and the run's config/flags. ``iteration`` counts optimizer steps already taken.
Beside each one a plain ssd.pytorch-format state dict (``ssd300_VOC_<iter>.pth``) is written
for ``eval.py``/old code, and at the end of training ``<save_folder>/VOC.pth`` as
ssd.pytorch did; those carry the config and class names where loaders ignore them (see
:func:`ssd.weights.files.with_plain_meta`). Everything loads with ``torch.load(...,
map_location=..., weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ..io import atomic_save
from ..weights.files import with_plain_meta

CHECKPOINT_FORMAT = "ssd-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIX = ".ckpt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit this run."""


# ----------------------------------------------------------------------------- file names

def run_prefix(size: int, dataset: str) -> str:
    """``ssd300_VOC``: the stem of ssd.pytorch's periodic weight files."""
    return f"ssd{int(size)}_{dataset}"


def checkpoint_path(folder: str | os.PathLike[str], prefix: str, iteration: int) -> Path:
    return Path(folder) / f"{prefix}_{int(iteration)}{CHECKPOINT_SUFFIX}"


def weights_path(folder: str | os.PathLike[str], prefix: str, iteration: int) -> Path:
    """ssd.pytorch's periodic file name, e.g. ``weights/ssd300_VOC_5000.pth``."""
    return Path(folder) / f"{prefix}_{int(iteration)}.pth"


def final_weights_path(folder: str | os.PathLike[str], dataset: str, size: int) -> Path:
    """ssd.pytorch's final file, ``weights/VOC.pth`` (``VOC512.pth`` for SSD512)."""
    return Path(folder) / (f"{dataset}.pth" if int(size) == 300 else f"{dataset}{int(size)}.pth")


def list_checkpoints(folder: str | os.PathLike[str], prefix: str) -> list[tuple[Path, int]]:
    """This run's training checkpoints in ``folder``, oldest first (by mtime, then iteration)."""
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+){re.escape(CHECKPOINT_SUFFIX)}$")
    found = []
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for entry in folder.iterdir():
        m = pattern.match(entry.name)
        if m and entry.is_file():
            try:
                mtime = entry.stat().st_mtime_ns
            except FileNotFoundError:  # pruned by another process meanwhile
                continue
            found.append((mtime, int(m.group(1)), entry))
    found.sort()
    return [(path, it) for _, it, path in found]


def find_latest_checkpoint(folder: str | os.PathLike[str], prefix: str) -> Path | None:
    """The most recently written checkpoint of this run (what ``--resume auto`` takes).

    Recency, not the highest iteration, so that after resuming from an older checkpoint the
    new line of checkpoints wins over the abandoned one.
    """
    found = list_checkpoints(folder, prefix)
    return found[-1][0] if found else None


def prune_checkpoints(folder: str | os.PathLike[str], prefix: str, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0``: delete none)."""
    if keep <= 0:
        return []
    found = list_checkpoints(folder, prefix)
    removed = []
    for path, _ in found[:-keep]:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


# ----------------------------------------------------------------------------- RNG states

def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """Python, NumPy, torch CPU (and the CUDA ``device``'s) RNG states, weights_only-safe."""
    version, py_state, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(state: Mapping[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()),
                     py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    if device is not None and device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ----------------------------------------------------------------------------- read / write

def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a training checkpoint atomically (a crash leaves the previous file intact)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    return atomic_save(payload, path)


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def read_checkpoint_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` (CPU, ``weights_only=True``) with a clear error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(
            f"could not read checkpoint {os.fspath(path)!r} ({type(e).__name__}: {first}); "
            f"it is not a PyTorch file or it is damaged") from e


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    obj = read_checkpoint_file(path)
    if not is_training_checkpoint(obj):
        raise CheckpointError(f"{os.fspath(path)!r} is not a training checkpoint "
                              f"(no format={CHECKPOINT_FORMAT!r} entry)")
    if obj.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{os.fspath(path)!r} was written by a newer version "
                              f"(format version {obj['version']} > {CHECKPOINT_VERSION})")
    return obj


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or inf (empty: all finite)."""
    return [k for k, v in state_dict.items()
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


class NonFiniteWeightsError(RuntimeError):
    """Refused to save weights holding NaN/inf."""


class CheckpointWriter:
    """Writes a run's files into ``folder`` (call on rank 0 only).

    Every save: the training checkpoint ``<prefix>_<iter>.ckpt`` (then only the newest
    ``keep`` are kept) and the plain state dict ``<prefix>_<iter>.pth``; the final save also
    ssd.pytorch's ``<DATASET>.pth``. ``extra`` (config, flags) goes into every checkpoint.
    """

    def __init__(self, folder: str | os.PathLike[str], prefix: str, dataset: str, size: int,
                 keep: int = 3, extra: Mapping[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.prefix, self.dataset, self.size = prefix, dataset, int(size)
        self.keep = int(keep)
        self.extra = dict(extra or {})
        self.last_checkpoint: Path | None = None
        self.last_weights: Path | None = None
        self.final_weights: Path | None = None

    def __call__(self, state: Mapping[str, Any], iteration: int, final: bool) -> list[Path]:
        bad = nonfinite_tensors(state["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"the weights hold NaN/inf at iteration {iteration} ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}): refusing to save them; the last good "
                f"checkpoint is {self.last_checkpoint or 'none (of this run)'}")
        self.folder.mkdir(parents=True, exist_ok=True)
        written = [save_checkpoint({**state, **self.extra},
                                   checkpoint_path(self.folder, self.prefix, iteration))]
        self.last_checkpoint = written[0]
        # Plain files load anywhere with a bare torch.load: CPU, contiguous (not channels-last);
        # config and class names ride in the OrderedDict's _metadata, which loaders ignore.
        plain = with_plain_meta({k: v.detach().to("cpu", memory_format=torch.contiguous_format)
                                 for k, v in state["model"].items()},
                                config=self.extra.get("config"),
                                class_names=self.extra.get("class_names"))
        self.last_weights = atomic_save(plain, weights_path(self.folder, self.prefix, iteration))
        written.append(self.last_weights)
        if final:
            self.final_weights = atomic_save(
                plain, final_weights_path(self.folder, self.dataset, self.size))
            written.append(self.final_weights)
        prune_checkpoints(self.folder, self.prefix, self.keep)
        return written
