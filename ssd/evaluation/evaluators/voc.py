"""PASCAL VOC: ``det_<set>_<class>.txt`` results files, the devkit's AP, per-class PR curves."""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from ..results import format_ap_table
from ..voc import (
    ClassDetections,
    det_file_name,
    load_annotations,
    mean_ap,
    read_det_file,
    voc_eval_class,
    write_det_file,
)
from .base import AllBoxes, Evaluator, PRCurve, Scores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["VOCEvaluator", "VOCSet", "dataset_class_names", "default_use_07_metric",
           "evaluate_voc", "voc_set"]

RESULTS_SUBDIR = "results"


def dataset_class_names(dataset: Any) -> list[str]:
    """The foreground class names of a detection dataset, in label order."""
    for attr in ("class_names", "classes", "CLASSES"):
        names = getattr(dataset, attr, None)
        if names is not None and not callable(names) and len(names):
            return [str(n) for n in names]
    tt = getattr(dataset, "target_transform", None)
    class_to_ind = getattr(tt, "class_to_ind", None)
    if class_to_ind:
        return [n for n, _ in sorted(class_to_ind.items(), key=lambda kv: kv[1])]
    raise TypeError(f"cannot tell the class names of {type(dataset).__name__} "
                    f"(expected a .class_names attribute)")


@dataclass
class VOCSet:
    """What VOC scoring needs to know about an image set."""

    image_ids: list[str]
    roots: list[str]  # VOC<year> folder of each image
    set_name: str  # used in det_<set>_<class>.txt
    years: list[str]
    imageset_files: list[str]
    class_names: list[str]

    def annotation_path(self, root: str) -> str:
        return os.path.join(root, "Annotations", "{:s}.xml")


def _voc_pairs(dataset: Any) -> list[tuple[Any, Any]] | None:
    ids = list(getattr(dataset, "ids", []))
    if not ids or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in ids):
        return None
    return [(r, i) for r, i in ids]


def voc_set(dataset: Any) -> VOCSet:
    """Describe a VOC-format dataset (``ids`` of ``(VOC<year> folder, image id)`` pairs)."""
    ids = _voc_pairs(dataset)
    if ids is None:
        raise TypeError(f"{type(dataset).__name__}.ids must be (VOC folder, image id) pairs")
    roots = [os.fspath(r) for r, _ in ids]
    image_sets = list(getattr(dataset, "image_sets", None) or getattr(dataset, "image_set", ()))
    pairs = [tuple(s) for s in image_sets if isinstance(s, (tuple, list)) and len(s) == 2]
    if not pairs:  # fall back to the folder names: VOC2007 -> ('2007', '?')
        pairs = [(os.path.basename(r.rstrip("/\\"))[-4:], "test") for r in dict.fromkeys(roots)]
    names = [name for _, name in pairs]
    set_name = names[0] if len(set(names)) == 1 else "_".join(f"{y}{n}" for y, n in pairs)
    files = []
    for root in dict.fromkeys(roots):
        year = os.path.basename(root.rstrip("/\\"))[-4:]
        name = next((n for y, n in pairs if str(y) == year), names[0])
        files.append(os.path.join(root, "ImageSets", "Main", f"{name}.txt"))
    return VOCSet([str(i) for _, i in ids], roots, set_name, [str(y) for y, _ in pairs], files,
                  dataset_class_names(dataset))


def default_use_07_metric(years: Sequence[str]) -> bool:
    """The VOC2007 11-point rule for VOC2007 sets, the area rule from VOC2010 on."""
    try:
        return all(int(y) < 2010 for y in years)
    except ValueError:
        return False


def _voc_annotations(vs: VOCSet, cachedir: PathLike | None) -> dict[str, list[dict[str, Any]]]:
    recs: dict[str, list[dict[str, Any]]] = {}
    by_root: dict[str, list[str]] = {}
    for root, image_id in zip(vs.roots, vs.image_ids):
        by_root.setdefault(root, []).append(image_id)
    files = dict(zip(dict.fromkeys(vs.roots), vs.imageset_files))
    for root, image_ids in by_root.items():
        recs.update(load_annotations(vs.annotation_path(root), image_ids, cachedir, files[root]))
    return recs


def _pixel_dets_to_class_dets(vs: VOCSet, per_image: Sequence[np.ndarray]) -> ClassDetections:
    """In-memory equivalent of a results file: 1-based corners, unrounded."""
    ids: list[str] = []
    rows = []
    for image_id, dets in zip(vs.image_ids, per_image):
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
        ids += [image_id] * len(dets)
        rows.append(dets)
    arr = np.concatenate(rows) if rows else np.zeros((0, 5))
    return ClassDetections(ids, arr[:, 4].copy(), arr[:, :4] + 1.0)


def _write_det_files(vs: VOCSet, all_boxes: AllBoxes, results_dir: PathLike) -> dict[str, str]:
    det_files = {}
    for c, name in enumerate(vs.class_names, start=1):
        path = Path(results_dir) / det_file_name(vs.set_name, name)
        det_files[name] = os.fspath(write_det_file(path, vs.image_ids, all_boxes[c]))
    return det_files


def _score_voc(vs: VOCSet, *, all_boxes: AllBoxes | None = None,
               det_files: Mapping[str, PathLike] | None = None,
               cachedir: PathLike | None = None, use_07_metric: bool | None = None,
               ovthresh: float = 0.5) -> Scores:
    """VOC AP of every class, from ``det_files`` ({class: results file}) or ``all_boxes``."""
    if use_07_metric is None:
        use_07_metric = default_use_07_metric(vs.years)
    if det_files is None and all_boxes is None:
        raise ValueError("VOC scoring needs all_boxes or results files")
    recs = _voc_annotations(vs, cachedir)
    ap, num_gt, num_dets, curves = {}, {}, {}, {}
    for c, name in enumerate(vs.class_names, start=1):
        if det_files is not None:
            source = os.fspath(det_files[name])
            dets = read_det_file(source)
        else:
            dets = _pixel_dets_to_class_dets(vs, all_boxes[c])
            source = f"detections of {name!r}"
        rec, prec, ap[name] = voc_eval_class(recs, vs.image_ids, name, dets, ovthresh,
                                             use_07_metric, source=source, ignore_case=True)
        curves[name] = PRCurve(np.asarray(rec), np.asarray(prec), ap[name])
        num_gt[name] = sum(1 for i in vs.image_ids for o in recs[i]
                           if o["name"].lower() == name.lower() and not o["difficult"])
        num_dets[name] = len(dets.scores)
    summary = {
        "mAP": mean_ap(ap.values()),
        "ap": ap,
        "num_gt": num_gt,
        "num_detections": num_dets,
        "metric": "VOC07 11-point AP" if use_07_metric else "VOC area AP",
        "use_07_metric": bool(use_07_metric),
        "iou_threshold": ovthresh,
    }
    return Scores(summary, {f"IoU > {ovthresh}": curves})


def evaluate_voc(vs: VOCSet, *, all_boxes: AllBoxes | None = None,
                 results_dir: PathLike | None = None, cachedir: PathLike | None = None,
                 use_07_metric: bool | None = None, ovthresh: float = 0.5) -> dict[str, Any]:
    """VOC AP of every class.

    Detections come from ``results_dir`` (``det_<set>_<class>.txt`` files, the classic way;
    with ``all_boxes`` too they are written there first) or, without ``results_dir``, from
    ``all_boxes`` in memory (same rule, no rounding to the file's decimals).

    Returns ``{"mAP", "ap": {class: AP}, "num_gt": {class: n}, "num_detections": {class: n},
    "metric", "use_07_metric", "iou_threshold", "det_files"}``.
    """
    det_files: dict[str, str] = {}
    if results_dir is not None:
        if all_boxes is not None:
            det_files = _write_det_files(vs, all_boxes, results_dir)
        else:
            det_files = {name: os.fspath(Path(results_dir) / det_file_name(vs.set_name, name))
                         for name in vs.class_names}
        scores = _score_voc(vs, det_files=det_files, cachedir=cachedir,
                            use_07_metric=use_07_metric, ovthresh=ovthresh)
    else:
        scores = _score_voc(vs, all_boxes=all_boxes, cachedir=cachedir,
                            use_07_metric=use_07_metric, ovthresh=ovthresh)
    return {**scores.summary, "det_files": det_files}


class VOCEvaluator(Evaluator):
    """VOC-format datasets (``ids`` of ``(VOC<year> folder, image id)`` pairs): the devkit's
    AP (VOC07 11-point or area rule) at IoU > 0.5, from ``det_<set>_<class>.txt`` files."""

    kind = "VOC"
    validation_keys = ("num_gt",)

    def __init__(self, vs: VOCSet, *, use_07_metric: bool | None = None,
                 cachedir: PathLike | None = None, ovthresh: float = 0.5) -> None:
        self.vs = vs
        self.set_name = vs.set_name
        self.use_07_metric = use_07_metric
        self.cachedir = cachedir
        self.ovthresh = ovthresh

    @classmethod
    def accepts(cls, dataset: Any) -> bool:
        return _voc_pairs(dataset) is not None

    @classmethod
    def for_dataset(cls, dataset: Any, *, set_name: str | None = None,
                    use_07_metric: bool | None = None, cachedir: PathLike | None = None,
                    verbose: bool = True) -> VOCEvaluator:
        vs = voc_set(dataset)
        if set_name:
            vs.set_name = set_name
        return cls(vs, use_07_metric=use_07_metric, cachedir=cachedir)

    def write_results(self, all_boxes: AllBoxes, folder: Path) -> dict[str, Any]:
        return {"det_files": _write_det_files(self.vs, all_boxes, Path(folder) / RESULTS_SUBDIR)}

    def find_results(self, path: Path) -> dict[str, Any]:
        # A folder eval.py wrote holds the files in its results/ subfolder.
        rdir = Path(path)
        if not (rdir / det_file_name(self.set_name, self.vs.class_names[0])).exists() and \
                (rdir / RESULTS_SUBDIR).is_dir():
            rdir = rdir / RESULTS_SUBDIR
        return {"det_files": {name: os.fspath(rdir / det_file_name(self.set_name, name))
                              for name in self.vs.class_names}}

    def score(self, all_boxes: AllBoxes) -> Scores:
        return _score_voc(self.vs, all_boxes=all_boxes, cachedir=self.cachedir,
                          use_07_metric=self.use_07_metric, ovthresh=self.ovthresh)

    def score_files(self, files: Mapping[str, Any]) -> Scores:
        return _score_voc(self.vs, det_files=files["det_files"], cachedir=self.cachedir,
                          use_07_metric=self.use_07_metric, ovthresh=self.ovthresh)

    def remove_results(self, files: Mapping[str, Any]) -> dict[str, Any]:
        left = {k: v for k, v in files.items() if k != "det_files"}
        paths = [Path(p) for p in files.get("det_files", {}).values()]
        for path in paths:
            path.unlink(missing_ok=True)
        for folder in dict.fromkeys(p.parent for p in paths):
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder)
        return left

    def format_table(self, scores: Scores, num_images: int) -> str:
        s = scores.summary
        title = (f"VOC {'+'.join(self.vs.years)} {self.set_name}: {num_images} images, "
                 f"{s['metric']}, IoU > {s['iou_threshold']}")
        table = format_ap_table(title, s["ap"], s["mAP"],
                                {"GT": s["num_gt"], "dets": s["num_detections"]},
                                mean_label="Mean AP")
        undefined = [k for k, v in s["ap"].items() if math.isnan(v)]
        if undefined:
            table += (f"\n(n/a: no non-difficult ground truth, left out of the mean: "
                      f"{', '.join(undefined)})")
        return table

    def plot(self, scores: Scores) -> Figure:
        from ..plots import plot_class_pr_curves

        s = scores.summary
        (panel, curves), = self.curves(scores).items()
        title = (f"VOC {'+'.join(self.vs.years)} {self.set_name}: precision-recall, "
                 f"{s['metric']}, {panel}")
        return plot_class_pr_curves(curves, title=title, mean_ap=s["mAP"],
                                    mean_label="Mean AP")
