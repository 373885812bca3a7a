"""Pictures of evaluation results: precision-recall curves and per-class AP bars.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot, no backend switch,
nothing global changes), so this works on machines without a display and inside notebooks. The
functions return the ``Figure``: a notebook shows it, :func:`save_figure` writes it, and tests
read its axes back. matplotlib is imported when a function is called, never at import time.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Mapping, Union

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .evaluators.base import PRCurve

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["plot_class_pr_curves", "plot_coco_summary", "precision_envelope", "save_figure"]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _pr_axes(ax) -> None:
    # A little room past 0 and 1, so curves along the edges are not hidden by the frame.
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(True, alpha=0.3)


def precision_envelope(recall: np.ndarray, precision: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The interpolated precision-recall curve VOC's AP is computed from.

    Args:
        recall, precision: ``[N]`` values after each detection, best score first.

    Returns:
        ``[N + 1]`` recalls starting at 0 and, at each, the best precision at that recall or
        above (non-increasing). Drawn with ``drawstyle="steps-pre"``, each value holds up to its
        recall.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.size == 0:
        return recall, precision
    best = np.maximum.accumulate(precision[::-1])[::-1]
    return np.concatenate(([0.0], recall)), np.concatenate((best[:1], best))


def plot_class_pr_curves(curves: Mapping[str, PRCurve], *, title: str, mean_ap: float,
                         mean_label: str = "mAP") -> Figure:
    """One interpolated precision-recall curve per class (:func:`precision_envelope`) on one
    axes, legend ``<class>  AP <ap>`` outside on the right, best class first. Classes without
    ground truth (AP NaN) have no curve and are named under the legend."""
    from matplotlib import colormaps

    fig = _figure(11.0, 7.0)
    ax = fig.add_subplot()
    defined = {k: c for k, c in curves.items() if not math.isnan(c.ap)}
    colors = colormaps["tab20"]
    # Colours follow the label order (stable across runs); the legend follows AP.
    color_of = {name: colors(i % 20) for i, name in enumerate(defined)}
    ranked = sorted(defined.items(), key=lambda kv: -kv[1].ap)
    for rank, (name, c) in enumerate(ranked):
        recall, precision = precision_envelope(c.recall, c.precision)
        # Curves often coincide (precision 1 up to full recall): each later one is thinner
        # and drawn on top, so the ones below still show as a coloured edge.
        width = 1.2 + 2.4 * (1.0 - rank / max(len(ranked) - 1, 1))
        ax.plot(recall, precision, color=color_of[name], linewidth=width,
                drawstyle="steps-pre", label=f"{name}  AP {_fmt(c.ap)}")
    _pr_axes(ax)
    ax.set_ylabel("precision (the best at this recall or above)")
    ax.set_title(f"{title}\n{mean_label} {_fmt(mean_ap)} over {len(defined)} classes",
                 fontsize=11)
    if defined:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False,
                  title="class  (best first)", title_fontsize=9, borderaxespad=0.0)
    if defined and not any(c.recall.size and np.nanmax(c.recall) > 0 for c in defined.values()):
        ax.text(0.5, 0.5, "no detection matches any ground-truth object:\nevery curve is at "
                "recall 0", transform=ax.transAxes, ha="center", va="center", fontsize=12,
                color="0.3")
    undefined = [k for k, c in curves.items() if math.isnan(c.ap)]
    if undefined:
        ax.text(1.01, 0.0, "no ground truth (no curve):\n" + "\n".join(undefined),
                transform=ax.transAxes, fontsize=7, va="bottom", ha="left", color="0.35")
    return fig


def plot_coco_summary(curves: Mapping[str, Mapping[str, PRCurve]], ap: Mapping[str, float],
                      ap50: Mapping[str, float], *, title: str, note: str | None = None
                      ) -> Figure:
    """COCO's picture: for each IoU panel of ``curves`` (IoU 0.50 and 0.75) every class's PR
    curve (thin, grey) and their mean (bold: its mean is the panel's AP); below, per-class
    AP@[.5:.95] and AP50 bars for the classes with ground truth."""
    fig = _figure(14.0, 9.5)
    grid = fig.add_gridspec(2, 2, height_ratios=[1.15, 1.0])
    panels = list(curves.items()) or [("IoU 0.50", {}), ("IoU 0.75", {})]
    for j, (panel, per_class) in enumerate(panels[:2]):
        ax = fig.add_subplot(grid[0, j])
        for i, c in enumerate(per_class.values()):
            ax.plot(c.recall, c.precision, color="0.6", linewidth=0.7, alpha=0.5,
                    label="one class each" if i == 0 else "_nolegend_")
        if per_class:
            mean_p = np.mean([c.precision for c in per_class.values()], axis=0)
            recall = next(iter(per_class.values())).recall
            ax.plot(recall, mean_p, color=f"C{j}", linewidth=2.5,
                    label=f"mean of {len(per_class)} classes, AP {_fmt(float(mean_p.mean()))}")
            ax.legend(loc="upper right", fontsize=9)
            if not mean_p.any():
                ax.text(0.5, 0.5, "no detection matches any ground-truth object",
                        transform=ax.transAxes, ha="center", va="center", fontsize=12,
                        color="0.3")
        else:
            ax.text(0.5, 0.5, note or "no curves", transform=ax.transAxes, ha="center")
        _pr_axes(ax)
        ax.set_title(f"precision-recall at {panel}", fontsize=11)
    bars = fig.add_subplot(grid[1, :])
    names = [k for k, v in ap.items() if not math.isnan(v)]
    x = np.arange(len(names))
    bars.bar(x, [ap50[k] for k in names], width=0.8, color="C0", alpha=0.35, label="AP50")
    bars.bar(x, [ap[k] for k in names], width=0.8, color="C0", label="AP@[.5:.95]")
    bars.set_xticks(x, names, rotation=90, fontsize=7 if len(names) > 40 else 9)
    bars.set_xlim(-0.6, max(len(names), 1) - 0.4)
    bars.set_ylim(0.0, 1.0)
    bars.set_ylabel("AP")
    bars.grid(True, axis="y", alpha=0.3)
    bars.legend(loc="upper right", fontsize=9)
    left_out = len(ap) - len(names)
    bars.set_title(f"per-class AP ({len(names)} classes with ground truth"
                   + (f"; {left_out} without left out)" if left_out else ")"), fontsize=11)
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=12)
    return fig


def save_figure(fig: Figure, path: PathLike, dpi: int = 100) -> str:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a picture)."""
    from ..io import atomic_write

    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return os.fspath(path)
