"""Result files and tables: per-class AP tables, ``results.json``, ``detections.pkl``."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..io import atomic_save, atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["format_ap_table", "load_detections_pkl", "save_detections_pkl", "to_jsonable",
           "write_results_json"]


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays become numbers/lists, NaN/inf become ``None``
    (strict JSON has no NaN), paths become strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_results_json(results: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``results`` as indented strict JSON, atomically."""
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    return atomic_write_text(text + "\n", path)


def save_detections_pkl(all_boxes: Sequence[Sequence[np.ndarray]], path: PathLike) -> Path:
    """ssd.pytorch's ``detections.pkl``: the ``all_boxes[class][image]`` lists, pickled."""
    return atomic_save([list(per_class) for per_class in all_boxes], path,
                       saver=lambda obj, f: pickle.dump(obj, f, pickle.HIGHEST_PROTOCOL))


def load_detections_pkl(path: PathLike) -> list[list[np.ndarray]]:
    """Read a ``detections.pkl``: lists and numpy arrays only (a pickle asking for anything else
    is refused, not run)."""
    from ..safe_pickle import UnsafePickleError, safe_pickle_load

    with open(path, "rb") as f:
        try:
            data = safe_pickle_load(f)
        except UnsafePickleError as e:
            raise ValueError(f"{path}: refused: {e}") from None
    if not isinstance(data, list) or not all(isinstance(c, list) for c in data):
        raise ValueError(f"{path}: not an all_boxes[class][image] list")
    return data


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def format_ap_table(title: str, ap: Mapping[str, float], mean: float,
                    columns: Mapping[str, Mapping[str, Any]] | None = None,
                    mean_label: str = "mAP") -> str:
    """A per-class table: one row per class with its AP (and any extra ``columns``), then the
    mean. ``n/a`` marks an undefined AP (no ground truth)."""
    columns = dict(columns or {})
    width = max([len(mean_label), 5] + [len(k) for k in ap])
    head = f"{'class':<{width}}  {'AP':>7}" + "".join(f"  {c:>7}" for c in columns)
    lines = [title, head, "-" * len(head)]
    for name, v in ap.items():
        extra = "".join(f"  {columns[c].get(name, ''):>7}" for c in columns)
        lines.append(f"{name:<{width}}  {_fmt(v):>7}{extra}")
    lines.append("-" * len(head))
    lines.append(f"{mean_label:<{width}}  {_fmt(mean):>7}")
    return "\n".join(lines)
