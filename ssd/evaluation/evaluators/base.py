"""The interface every benchmark's evaluator implements, and the data it exchanges."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # matplotlib is optional and imported only to draw
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["AllBoxes", "Evaluator", "PRCurve", "Scores"]

# all_boxes[c][i]: [n, 5] (x1, y1, x2, y2, score) in pixels of image i for class c (0: background)
AllBoxes = Sequence[Sequence[np.ndarray]]


@dataclass
class PRCurve:
    """One class's precision-recall curve: ``recall`` [N] and ``precision`` [N] (same length),
    and the AP the benchmark's rule gives it (NaN when the class has no ground truth)."""

    recall: np.ndarray
    precision: np.ndarray
    ap: float


@dataclass
class Scores:
    """What scoring gives.

    ``summary``: the numbers ``results.json`` records (``mAP``, ``ap`` per class, ``metric``,
    and the benchmark's own: VOC ``num_gt``, COCO ``stats``...), JSON-ready.
    ``curves``: per-class PR curves by panel (``{"IoU 0.5": {class: PRCurve}}``); they are
    drawn in ``pr_curves.png`` and not written to ``results.json``.
    """

    summary: dict[str, Any]
    curves: dict[str, dict[str, PRCurve]] = field(default_factory=dict)

    @property
    def mAP(self) -> float:
        return float(self.summary["mAP"])


class Evaluator(ABC):
    """One benchmark's evaluation of one dataset.

    An evaluator takes the detections of the whole dataset (``all_boxes``), writes them in its
    benchmark's results format, scores them (from memory or from results files, which also lets
    it score files written elsewhere), formats the per-class table and draws the PR curves.
    :func:`ssd.evaluation.evaluators.evaluator_for` picks the evaluator for a dataset.
    """

    #: the benchmark's name, recorded as ``results.json``'s ``"dataset"``
    kind: ClassVar[str]
    #: summary entries the training loop's validation passes on besides mAP, ap and metric
    validation_keys: ClassVar[tuple[str, ...]] = ()

    set_name: str

    @classmethod
    @abstractmethod
    def accepts(cls, dataset: Any) -> bool:
        """Whether ``dataset`` is in this benchmark's format."""

    @classmethod
    @abstractmethod
    def for_dataset(cls, dataset: Any, *, set_name: str | None = None,
                    use_07_metric: bool | None = None, cachedir: PathLike | None = None,
                    verbose: bool = True) -> Evaluator:
        """Build the evaluator of ``dataset``; options a benchmark has no use for are ignored
        (``use_07_metric`` and ``cachedir`` are VOC's, ``verbose`` COCOeval's printout)."""

    @abstractmethod
    def write_results(self, all_boxes: AllBoxes, folder: Path) -> dict[str, Any]:
        """Write the detections in the benchmark's results format under ``folder``; returns the
        ``results.json`` ``"files"`` entries naming what was written."""

    @abstractmethod
    def find_results(self, path: Path) -> dict[str, Any]:
        """The results files a user points at (a folder or a file), as ``"files"`` entries."""

    @abstractmethod
    def score(self, all_boxes: AllBoxes) -> Scores:
        """Score in-memory detections."""

    @abstractmethod
    def score_files(self, files: Mapping[str, Any]) -> Scores:
        """Score the results files named by ``files`` (:meth:`write_results`'s or
        :meth:`find_results`' answer)."""

    def remove_results(self, files: Mapping[str, Any]) -> dict[str, Any]:
        """Delete the results files that ``--cleanup`` removes; returns the entries left.
        By default nothing is removed."""
        return dict(files)

    @abstractmethod
    def format_table(self, scores: Scores, num_images: int) -> str:
        """The per-class table ``eval.py`` prints."""

    def curves(self, scores: Scores) -> dict[str, dict[str, PRCurve]]:
        """Per-class precision-recall curves, by panel."""
        return scores.curves

    @abstractmethod
    def plot(self, scores: Scores) -> Figure:
        """Draw the PR curves (and whatever else the benchmark shows) as a matplotlib
        ``Figure`` (no pyplot: nothing global changes). Needs matplotlib."""

    def save_plot(self, scores: Scores, path: PathLike) -> Figure:
        """Draw and write the figure as a PNG, atomically; returns the figure."""
        from ..plots import save_figure

        fig = self.plot(scores)
        save_figure(fig, path)
        return fig
