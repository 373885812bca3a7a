"""JSON-lines metrics log: one self-contained JSON object per line, appended and flushed."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep them visible as "nan"/"inf"
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # 0-d tensors and numpy scalars
        return _jsonable(value.item())
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class MetricsLog:
    """Appends records to ``path`` (created with its folder).

    Each record is written with a single ``write`` on an ``O_APPEND`` descriptor, so a
    killed run leaves at most its last line incomplete; readers skip lines that do not parse
    (and the next run ends that line first, so its own first record stays whole). A failed
    write (disk full) is one warning: the checkpoints, not the log, decide whether a run fails.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._failed = False
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def write(self, record: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"metrics log {self.path} is closed")
        line = json.dumps({"time": round(time.time(), 3), **_jsonable(dict(record))},
                          allow_nan=False)
        try:
            os.write(self._fd, (line + "\n").encode("utf-8"))
        except OSError as e:
            if not self._failed:
                log.warning("metrics log %s: could not write a record (%s); training goes on, "
                            "records are missing until writes succeed", self.path,
                            e.strerror or e)
            self._failed = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete records of a metrics file (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
