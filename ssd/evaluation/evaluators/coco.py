"""COCO: a ``bbox_<set>_results.json``, COCOeval's AP@[.5:.95], PR curves at IoU 0.5 and 0.75."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from ..coco import (
    COCOPrecision,
    coco_detections,
    coco_score,
    read_coco_results,
    write_coco_results,
)
from ..results import format_ap_table
from .base import AllBoxes, Evaluator, PRCurve, Scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["COCOEvaluator", "coco_label_to_cat_id", "evaluate_coco", "is_coco_dataset"]

# The IoU thresholds whose precision-recall curves are drawn.
CURVE_IOUS = (0.5, 0.75)


def is_coco_dataset(dataset: Any) -> bool:
    """COCO-format datasets carry a pycocotools ``COCO`` object as ``.coco``."""
    return getattr(dataset, "coco", None) is not None


def coco_label_to_cat_id(dataset: Any) -> list[int]:
    """COCO category id of each 0-based label of a COCO-format dataset."""
    for attr in ("label_to_cat_id", "label_to_cat", "cat_ids", "category_ids"):
        m = getattr(dataset, attr, None)
        if m is None or callable(m):
            continue
        if isinstance(m, Mapping):
            return [int(m[k]) for k in sorted(m)]
        return [int(c) for c in m]
    # Contiguous labels follow the sorted category ids (the COCO convention).
    return sorted(int(c) for c in dataset.coco.getCatIds())


def _pr_curves(pr: COCOPrecision | None) -> dict[str, dict[str, PRCurve]]:
    """Per-class curves at each of :data:`CURVE_IOUS`; classes without ground truth left out."""
    if pr is None:
        return {}
    out = {}
    for iou in CURVE_IOUS:
        t = int(np.argmin(np.abs(pr.iou_thrs - iou)))
        panel = {}
        for k, name in enumerate(pr.names):
            p = pr.precision[t, :, k]
            if (p > -1).any():
                panel[name] = PRCurve(pr.rec_thrs.copy(), p.copy(), float(p[p > -1].mean()))
        out[f"IoU {pr.iou_thrs[t]:.2f}"] = panel
    return out


def _score_coco(dataset: Any, dets: Sequence[Mapping[str, Any]], verbose: bool) -> Scores:
    summary, pr = coco_score(dataset.coco, dets, [int(i) for i in dataset.ids], verbose=verbose)
    summary["mAP"] = summary["stats"]["AP"]
    summary["metric"] = "COCO AP@[.5:.95] (bbox)"
    return Scores(summary, _pr_curves(pr))


def evaluate_coco(dataset: Any, *, all_boxes: AllBoxes | None = None,
                  results_file: PathLike | None = None, verbose: bool = True
                  ) -> dict[str, Any]:
    """COCO bbox AP of a COCO-format dataset's images.

    With ``all_boxes`` the detections are converted (and written to ``results_file`` when
    given); with only ``results_file`` an existing results json is scored.
    """
    if all_boxes is not None:
        dets = coco_detections(all_boxes, [int(i) for i in dataset.ids],
                               coco_label_to_cat_id(dataset))
        if results_file is not None:
            write_coco_results(dets, results_file)
    elif results_file is not None:
        dets = read_coco_results(results_file)
    else:
        raise ValueError("evaluate_coco needs all_boxes or results_file")
    out = _score_coco(dataset, dets, verbose).summary
    if results_file is not None:
        out["results_file"] = os.fspath(results_file)
    return out


class COCOEvaluator(Evaluator):
    """COCO-format datasets (a pycocotools ``COCO`` as ``.coco``): COCOeval's bbox numbers."""

    kind = "COCO"
    validation_keys = ("stats",)

    def __init__(self, dataset: Any, set_name: str, *, verbose: bool = True) -> None:
        self.dataset = dataset
        self.set_name = set_name
        self.verbose = verbose

    @classmethod
    def accepts(cls, dataset: Any) -> bool:
        return is_coco_dataset(dataset)

    @classmethod
    def for_dataset(cls, dataset: Any, *, set_name: str | None = None,
                    use_07_metric: bool | None = None, cachedir: PathLike | None = None,
                    verbose: bool = True) -> COCOEvaluator:
        name = set_name or str(getattr(dataset, "image_set", None) or getattr(
            dataset, "name", "coco"))
        return cls(dataset, name, verbose=verbose)

    @property
    def results_name(self) -> str:
        return f"bbox_{self.set_name}_results.json"

    def _detections(self, all_boxes: AllBoxes) -> list[dict[str, Any]]:
        return coco_detections(all_boxes, [int(i) for i in self.dataset.ids],
                               coco_label_to_cat_id(self.dataset))

    def write_results(self, all_boxes: AllBoxes, folder: Path) -> dict[str, Any]:
        path = Path(folder) / self.results_name
        write_coco_results(self._detections(all_boxes), path)
        return {"coco_results": os.fspath(path)}

    def find_results(self, path: Path) -> dict[str, Any]:
        path = Path(path)
        return {"coco_results": os.fspath(path / self.results_name if path.is_dir() else path)}

    def score(self, all_boxes: AllBoxes) -> Scores:
        return _score_coco(self.dataset, self._detections(all_boxes), self.verbose)

    def score_files(self, files: Mapping[str, Any]) -> Scores:
        return _score_coco(self.dataset, read_coco_results(files["coco_results"]), self.verbose)

    def format_table(self, scores: Scores, num_images: int) -> str:
        s = scores.summary
        title = f"COCO {self.set_name}: {num_images} images, {s['metric']}"
        table = format_ap_table(title, s["ap"], s["mAP"], {"AP50": {
            k: ("n/a" if math.isnan(v) else f"{v:.4f}") for k, v in s["ap50"].items()}},
            mean_label="AP")
        cells = [f"{k} {('n/a' if math.isnan(v) else f'{v:.4f}')}"
                 for k, v in s["stats"].items()]
        stats = "  ".join(cells[:6]) + "\n" + "  ".join(cells[6:])
        note = f"\nnote: {s['note']}" if s.get("note") else ""
        return f"{table}\n{stats}{note}"

    def plot(self, scores: Scores) -> Figure:
        from ..plots import plot_coco_summary

        s = scores.summary
        return plot_coco_summary(self.curves(scores), s["ap"], s["ap50"],
                                 title=f"COCO {self.set_name}: {s['metric']} {s['mAP']:.3f}",
                                 note=s.get("note"))
