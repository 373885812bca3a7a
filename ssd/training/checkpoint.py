"""Training checkpoints: full state for exact resumption, written atomically.

A training checkpoint (``<save_folder>/ssd300_VOC_<iter>.ckpt``) is a dict holding the model,
optimizer, GradScaler and schedule states, the iteration and data position, every process's
RNG states and the run's config/flags. ``iteration`` counts optimizer steps already taken.
Beside each one a plain ssd.pytorch-format state dict (``ssd300_VOC_<iter>.pth``) is written
for ``eval.py``/old code, and at the end of training ``<save_folder>/VOC.pth`` as
ssd.pytorch did; those carry the config and class names where loaders ignore them (see
:func:`ssd.weights.files.with_plain_meta`). Everything is read by PyTorch's safe loader
(``weights_only=True``, with a ``map_location``).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ..weights.files import with_plain_meta
from .faults import fault_point
from .saving import SaveFailedError, failed_save_message, save_file

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


def prune_checkpoints(folder: str | os.PathLike[str], prefix: str, keep: int,
                      owned: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete all but the ``keep`` newest checkpoints (``keep <= 0``: delete none).

    ``owned(path)``: only checkpoints it accepts are counted and deleted (a run's own).
    """
    if keep <= 0:
        return []
    found = [(p, it) for p, it in list_checkpoints(folder, prefix) if owned is None or owned(p)]
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
    """Write a training checkpoint atomically (a crash leaves the previous file intact).

    A failed write raises the ``OSError`` behind it (``ENOSPC``...), not torch's wrapper.
    """
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    return save_file(payload, path, state.get("iteration"))


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


def peek_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training checkpoint with its tensors memory-mapped (cheap: reads the index only).

    Raises ``ValueError`` naming the problem when the file is damaged or no checkpoint.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ValueError(f"{type(e).__name__}: {first}" if first else type(e).__name__) from e
    if not is_training_checkpoint(obj):
        raise ValueError("not a training checkpoint")
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
    ``keep`` of this run's own, those with its ``extra["run_id"]``, are kept) and the plain
    state dict ``<prefix>_<iter>.pth``; the final save also ssd.pytorch's ``<DATASET>.pth``.
    ``extra`` (config, flags, run id) goes into every checkpoint. A file that cannot be written
    raises :class:`~ssd.training.saving.SaveFailedError` naming it, the operating system's
    reason and the last good checkpoint.
    """

    def __init__(self, folder: str | os.PathLike[str], prefix: str, dataset: str, size: int,
                 keep: int = 3, extra: Mapping[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.prefix, self.dataset, self.size = prefix, dataset, int(size)
        self.keep = int(keep)
        self.extra = dict(extra or {})
        self.run_id = self.extra.get("run_id")
        self.last_checkpoint: Path | None = None
        self.last_weights: Path | None = None
        self.final_weights: Path | None = None
        self._owners: dict[tuple[Path, int, int], Any] = {}  # (path, mtime, size) -> run id

    def __call__(self, state: Mapping[str, Any], iteration: int, final: bool) -> list[Path]:
        bad = nonfinite_tensors(state["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"the weights hold NaN/inf at iteration {iteration} ({', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}): refusing to save them; the last good "
                f"checkpoint is {self.last_checkpoint or 'none (of this run)'}")
        ckpt = checkpoint_path(self.folder, self.prefix, iteration)
        written = [self._save({**state, **self.extra}, ckpt, iteration, save_checkpoint)]
        self.last_checkpoint = written[0]
        fault_point("after_checkpoint", iteration)
        self.last_weights = self.save_weights(
            state["model"], weights_path(self.folder, self.prefix, iteration), iteration)
        written.append(self.last_weights)
        if final:
            fault_point("before_final_weights", iteration)
            self.final_weights = self.save_weights(
                state["model"], final_weights_path(self.folder, self.dataset, self.size),
                iteration)
            written.append(self.final_weights)
        prune_checkpoints(self.folder, self.prefix, self.keep, owned=self.owns)
        return written

    def save_weights(self, model_state: Mapping[str, torch.Tensor],
                     path: str | os.PathLike[str], iteration: int | None = None) -> Path:
        """The plain state dict file (ssd.pytorch format) of ``model_state``."""
        # Plain files load anywhere with a bare torch.load: CPU, contiguous (not channels-last);
        # config and class names ride in the OrderedDict's _metadata, which loaders ignore.
        plain = with_plain_meta({k: v.detach().to("cpu", memory_format=torch.contiguous_format)
                                 for k, v in model_state.items()},
                                config=self.extra.get("config"),
                                class_names=self.extra.get("class_names"))
        return self._save(plain, Path(path), iteration)

    def _save(self, obj: Any, path: Path, iteration: int | None,
              saver: Callable[..., Path] | None = None) -> Path:
        try:
            return saver(obj, path) if saver is not None else save_file(obj, path, iteration)
        except OSError as e:
            raise SaveFailedError(failed_save_message(path, e, self.last_checkpoint)) from e

    def owns(self, path: Path) -> bool:
        """Whether checkpoint ``path`` belongs to this run (same run id)."""
        if self.run_id is None:
            return True  # no identity given: every checkpoint of the prefix (old behaviour)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (path, st.st_mtime_ns, st.st_size)
        if key not in self._owners:
            try:
                self._owners[key] = peek_checkpoint(path).get("run_id")
            except ValueError:
                self._owners[key] = None  # unreadable: not provably ours, never deleted
        return self._owners[key] == self.run_id
