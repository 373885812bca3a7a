"""Training curves from metrics logs: loss (total, loc, conf), learning rate, images/s, mAP.

:func:`run_series` turns the records of one ``<prefix>_metrics.jsonl`` into plain series;
:func:`draw_curves` draws one run or compares several (matplotlib's object API with the Agg
canvas: no pyplot state, no display needed); :class:`CurvesWriter` refreshes
``<prefix>_curves.png`` after every training checkpoint and never lets a plotting problem stop
training. ``python -m ssd.plot`` is the command-line front end.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]



@dataclass(frozen=True)
class Panel:
    """One stacked plot: its series as ``(series key, legend text or None for the run's
    label, line style)``; ``optional`` panels appear only when some run has their data."""

    ylabel: str
    lines: tuple[tuple[str, str | None, str], ...]
    height: float = 1.0
    log: bool = False
    from_zero: bool = False
    marker: str | None = None
    optional: bool = False


PANELS = (
    Panel("loss", (("loss", "total", "-"), ("loss_l", "loc", "--"), ("loss_c", "conf", ":")),
          height=2.0),
    Panel("learning rate", (("lr", None, "-"),), log=True),
    Panel("images/s", (("img_per_s", None, "-"),)),
    Panel("mAP", (("mAP", None, "-"),), from_zero=True, marker="o", optional=True),
)


@dataclass
class RunSeries:
    """One run's curves, each a list of ``(iteration, value)`` sorted by iteration.

    ``series`` keys: ``loss``, ``loss_l``, ``loss_c``, ``lr``, ``img_per_s`` (from the
    training records) and ``mAP`` (from the evaluation records).
    """

    label: str
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def xs(self, key: str) -> list[int]:
        return [x for x, _ in self.series.get(key, [])]

    def ys(self, key: str) -> list[float]:
        return [y for _, y in self.series.get(key, [])]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)  # non-finite values are logged as the strings "nan"/"inf"
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def run_series(records: Iterable[Mapping[str, Any]], label: str = "run") -> RunSeries:
    """The curves of one metrics log.

    A resumed run appends a ``start`` record at the iteration it continues from; points the
    abandoned attempt logged after that iteration are dropped, and of two points at the same
    iteration the later one wins, so a run resumed any number of times draws one clean line.
    """
    points: dict[str, dict[int, float]] = {}
    sources = {"train": ("loss", "loss_l", "loss_c", "lr", "img_per_s"), "eval": ("mAP",)}
    for rec in records:
        kind = rec.get("type")
        it = rec.get("iter")
        if not isinstance(it, int) or isinstance(it, bool):
            continue
        if kind == "start":
            for per_iter in points.values():
                for stale in [i for i in per_iter if i > it]:
                    del per_iter[stale]
            continue
        for key in sources.get(kind, ()):
            v = _number(rec.get(key))
            if v is not None:
                points.setdefault(key, {})[it] = v
    return RunSeries(label, {k: sorted(v.items()) for k, v in points.items() if v})


def read_run(path: PathLike, label: str | None = None) -> RunSeries:
    """:func:`run_series` of a metrics file (label: the file name without ``_metrics.jsonl``)."""
    from .metrics import read_metrics

    p = Path(path)
    name = label or p.name.removesuffix(".jsonl").removesuffix("_metrics")
    return run_series(read_metrics(p), name)


def draw_curves(runs: Sequence[RunSeries], title: str | None = None) -> Any:
    """A matplotlib ``Figure`` with stacked panels sharing the iteration axis (:data:`PANELS`).

    Panels (y labels): ``loss`` (training loss: total solid, loc dashed, conf dotted),
    ``learning rate`` (log scale), ``images/s``, and ``mAP`` when any run was evaluated.
    One colour per run; the legend names the run only when several are compared.

    Raises:
        ValueError: no run has a training loss point.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not any(r.series.get("loss") for r in runs):
        raise ValueError("no training loss points to draw (the metrics log has no "
                         "'train' records yet)")
    panels = [p for p in PANELS if not p.optional
              or any(r.series.get(k) for r in runs for k, _, _ in p.lines)]
    heights = [p.height for p in panels]
    fig = Figure(figsize=(8.0, 2.2 * sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    compare = len(runs) > 1
    for ax, panel in zip(axes, panels):
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        for i, run in enumerate(runs):
            for key, text, style in panel.lines:
                if not run.series.get(key):
                    continue
                label = run.label if text is None else (
                    f"{run.label}: {text}" if compare else text)
                ax.plot(run.xs(key), run.ys(key), style, color=f"C{i % 10}", label=label,
                        marker=panel.marker, markersize=4)
        if panel.log and any(y > 0 for line in ax.get_lines() for y in line.get_ydata()):
            ax.set_yscale("log")
        if panel.from_zero:
            ax.set_ylim(bottom=0.0)
        if len(panel.lines) > 1 or compare:
            ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("iteration")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Any, path: PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (a reader never sees half a picture)."""
    from ..io import atomic_write

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)


def plot_runs(paths: Sequence[PathLike], output: PathLike, labels: Sequence[str] | None = None,
              title: str | None = None) -> Path:
    """Read metrics files, draw them (:func:`draw_curves`) and save the PNG to ``output``."""
    runs = [read_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]
    return save_figure(draw_curves(runs, title), output)


class CurvesWriter:
    """Redraws ``output`` from ``metrics_path`` on each call (after every checkpoint).

    Any failure (matplotlib missing, unreadable log, ...) is logged as a warning and never
    raised; a missing matplotlib is reported once, then plotting stops.
    """

    def __init__(self, metrics_path: PathLike, output: PathLike, title: str | None = None
                 ) -> None:
        self.metrics_path, self.output = Path(metrics_path), Path(output)
        self.title = title
        self.disabled = False

    def __call__(self, iteration: int | None = None) -> Path | None:
        if self.disabled:
            return None
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.disabled = True
            log.warning("training curves: matplotlib is not installed (pip install matplotlib "
                        "or 'ssd[plots]'); no %s", self.output.name)
            return None
        try:
            run = read_run(self.metrics_path)
            if not run.series.get("loss"):
                return None  # nothing logged yet
            return save_figure(draw_curves([run], self.title), self.output)
        except Exception as e:
            log.warning("training curves: could not draw %s at iteration %s (%s: %s); "
                        "training goes on", self.output, iteration, type(e).__name__, e)
            return None


def after_save(save_fn: Any, curves: CurvesWriter) -> Any:
    """Wrap a trainer's ``save_fn(state, iteration, final)`` so the curves follow each save."""

    def save(state: Mapping[str, Any], iteration: int, final: bool) -> Any:
        written = save_fn(state, iteration, final)
        curves(iteration)
        return written

    return save
