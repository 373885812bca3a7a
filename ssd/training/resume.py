"""Resume edge cases: damaged checkpoints, missing weights files, re-run metrics rows.

A run killed at any moment leaves its folder in one of a few states; ``--resume`` turns each
into the state the uninterrupted run would have left:

- the newest checkpoint is damaged (truncated, not a checkpoint): ``--resume auto`` falls back
  to the newest intact one, naming both;
- a checkpoint's ``.pth`` twin, or the final ``VOC.pth`` of a finished run, is missing (or
  older than its checkpoint, i.e. from an abandoned line): it is written from the checkpoint;
- the metrics log holds rows of iterations after the resumed one (they will be run again):
  they move to ``<prefix>_metrics_superseded.jsonl`` so that no iteration appears twice.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from .checkpoint import (
    CheckpointWriter,
    final_weights_path,
    list_checkpoints,
    peek_checkpoint,
    weights_path,
)
from .saving import SaveFailedError, failed_save_message

log = logging.getLogger(__name__)


def find_intact_checkpoint(folder: str | os.PathLike[str], prefix: str) -> Path | None:
    """The most recent checkpoint of ``prefix`` that reads; warns about newer damaged ones.

    When none reads, the newest is returned (its full read then reports the damage).
    """
    found = list_checkpoints(folder, prefix)
    damaged: list[tuple[Path, str]] = []
    for path, _ in reversed(found):
        try:
            peek_checkpoint(path)
        except ValueError as e:
            damaged.append((path, str(e)))
            continue
        if damaged:
            log.warning("--resume auto: the newest checkpoint %s is damaged (%s); resuming "
                        "from the newest intact one, %s%s", damaged[0][0], damaged[0][1], path,
                        f" ({len(damaged) - 1} more damaged skipped)" if len(damaged) > 1
                        else "")
        return path
    return found[-1][0] if found else None


def _older(path: Path, than: Path) -> bool:
    try:
        return path.stat().st_mtime_ns < than.stat().st_mtime_ns
    except FileNotFoundError:
        return True


def restore_missing_weights(writer: CheckpointWriter) -> list[Path]:
    """Write the ``.pth`` files a run killed mid-save did not get to (see the module doc)."""
    written = []
    final_ckpt: tuple[Path, dict[str, Any]] | None = None
    for path, iteration in list_checkpoints(writer.folder, writer.prefix):
        twin = weights_path(writer.folder, writer.prefix, iteration)
        needs_twin = _older(twin, path)
        try:
            ck = peek_checkpoint(path)
        except ValueError:
            continue  # damaged: find_intact_checkpoint says so when it matters
        if needs_twin:
            written.append(writer.save_weights(ck["model"], twin))
        config = ck.get("config") or {}
        if int(ck.get("iteration", -1)) == int(config.get("max_iter", -2)):
            final_ckpt = (path, ck)  # list_checkpoints is oldest first: the newest wins
    if final_ckpt is not None:
        final = final_weights_path(writer.folder, writer.dataset, writer.size)
        if _older(final, final_ckpt[0]):
            written.append(writer.save_weights(final_ckpt[1]["model"], final))
    if written:
        log.warning("wrote weights file(s) that an interrupted save left out: %s",
                    ", ".join(os.fspath(p) for p in written))
    return written


def superseded_path(metrics_path: str | os.PathLike[str]) -> Path:
    p = Path(metrics_path)
    stem = p.name[:-len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(f"{stem}_superseded.jsonl")


def supersede_metrics(metrics_path: str | os.PathLike[str], iteration: int) -> int:
    """Move records of iterations after ``iteration`` out of the metrics log.

    Torn lines (a run killed mid-write) are dropped. Returns the number of records moved.
    """
    path = Path(metrics_path)
    if not path.is_file():
        return 0
    keep, moved, torn = [], [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            torn += bool(line.strip())
            continue
        it = rec.get("iter") if isinstance(rec, dict) else None
        (moved if isinstance(it, int) and it > iteration else keep).append(line)
    if not moved and not torn:
        return 0
    if moved:
        side = superseded_path(path)
        with open(side, "a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in moved))
        log.info("metrics: %d record(s) after iteration %d (to be run again) moved to %s",
                 len(moved), iteration, side)
    atomic_write_text("".join(line + "\n" for line in keep), path)
    return len(moved)


def prepare_resumed_folder(writer: CheckpointWriter, metrics_path: str | os.PathLike[str],
                           checkpoint: Path | None, iteration: int | None) -> None:
    """What a resumed run does to its folder before training (rank 0, folder lock held).

    ``checkpoint``: the training checkpoint resumed from; ``iteration``: where training goes
    on (None: not a continuation, e.g. fine-tuning plain weights from iteration 0).
    """
    if checkpoint is not None:
        writer.last_checkpoint = checkpoint
    restore_missing_weights(writer)
    if iteration is not None:
        try:
            supersede_metrics(metrics_path, iteration)
        except OSError as e:
            raise SaveFailedError(failed_save_message(metrics_path, e, checkpoint)) from e
