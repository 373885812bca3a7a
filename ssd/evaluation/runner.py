"""Whole evaluations: model + dataset -> detections -> VOC or COCO scores, tables and files.

:func:`evaluate` is what ``eval.py`` runs; :func:`evaluate_results` scores an existing results
folder without a model; :func:`run_validation` is the in-memory variant the training loop's
``--eval_every`` calls.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from .coco import coco_detections, coco_evaluate, read_coco_results, write_coco_results
from .inference import InferenceResult, run_inference, unwrap_model
from .results import format_ap_table, save_detections_pkl, write_results_json
from .voc import (
    ClassDetections,
    det_file_name,
    load_annotations,
    mean_ap,
    read_det_file,
    voc_eval_class,
    write_det_file,
)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "VOCSet",
    "coco_label_to_cat_id",
    "dataset_class_names",
    "evaluate",
    "evaluate_coco",
    "evaluate_results",
    "evaluate_voc",
    "is_coco_dataset",
    "run_validation",
    "voc_set",
]

RESULTS_SUBDIR = "results"
CACHE_SUBDIR = "annotations_cache"


# ----------------------------------------------------------------------------- datasets

def is_coco_dataset(dataset: Any) -> bool:
    """COCO-format datasets carry a pycocotools ``COCO`` object as ``.coco``."""
    return getattr(dataset, "coco", None) is not None


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


def voc_set(dataset: Any) -> VOCSet:
    """Describe a VOC-format dataset (``ids`` of ``(VOC<year> folder, image id)`` pairs)."""
    ids = list(getattr(dataset, "ids", []))
    if not ids or not all(isinstance(i, (tuple, list)) and len(i) == 2 for i in ids):
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


# ----------------------------------------------------------------------------- VOC

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


def evaluate_voc(vs: VOCSet, *, all_boxes: Sequence[Sequence[np.ndarray]] | None = None,
                 results_dir: PathLike | None = None, cachedir: PathLike | None = None,
                 use_07_metric: bool | None = None, ovthresh: float = 0.5) -> dict[str, Any]:
    """VOC AP of every class.

    Detections come from ``results_dir`` (``det_<set>_<class>.txt`` files, the classic way;
    with ``all_boxes`` too they are written there first) or, without ``results_dir``, from
    ``all_boxes`` in memory (same rule, no rounding to the file's decimals).

    Returns ``{"mAP", "ap": {class: AP}, "num_gt": {class: n}, "num_detections": {class: n},
    "metric", "use_07_metric", "iou_threshold", "det_files"}``.
    """
    if use_07_metric is None:
        use_07_metric = default_use_07_metric(vs.years)
    recs = _voc_annotations(vs, cachedir)
    det_files: dict[str, str] = {}
    if results_dir is not None and all_boxes is not None:
        for c, name in enumerate(vs.class_names, start=1):
            path = Path(results_dir) / det_file_name(vs.set_name, name)
            det_files[name] = os.fspath(write_det_file(path, vs.image_ids, all_boxes[c]))
    ap, num_gt, num_dets = {}, {}, {}
    for c, name in enumerate(vs.class_names, start=1):
        if results_dir is not None:
            path = Path(results_dir) / det_file_name(vs.set_name, name)
            det_files[name] = os.fspath(path)
            dets = read_det_file(path)
            source = os.fspath(path)
        elif all_boxes is not None:
            dets = _pixel_dets_to_class_dets(vs, all_boxes[c])
            source = f"detections of {name!r}"
        else:
            raise ValueError("evaluate_voc needs all_boxes or results_dir")
        _, _, ap[name] = voc_eval_class(recs, vs.image_ids, name, dets, ovthresh,
                                        use_07_metric, source=source, ignore_case=True)
        num_gt[name] = sum(1 for i in vs.image_ids for o in recs[i]
                           if o["name"].lower() == name.lower() and not o["difficult"])
        num_dets[name] = len(dets.scores)
    return {
        "mAP": mean_ap(ap.values()),
        "ap": ap,
        "num_gt": num_gt,
        "num_detections": num_dets,
        "metric": "VOC07 11-point AP" if use_07_metric else "VOC area AP",
        "use_07_metric": bool(use_07_metric),
        "iou_threshold": ovthresh,
        "det_files": det_files,
    }


def _voc_table(vs: VOCSet, scores: Mapping[str, Any], n_images: int) -> str:
    title = (f"VOC {'+'.join(vs.years)} {vs.set_name}: {n_images} images, "
             f"{scores['metric']}, IoU > {scores['iou_threshold']}")
    table = format_ap_table(title, scores["ap"], scores["mAP"],
                            {"GT": scores["num_gt"], "dets": scores["num_detections"]},
                            mean_label="Mean AP")
    undefined = [k for k, v in scores["ap"].items() if math.isnan(v)]
    if undefined:
        table += (f"\n(n/a: no non-difficult ground truth, left out of the mean: "
                  f"{', '.join(undefined)})")
    return table


# ----------------------------------------------------------------------------- COCO

def evaluate_coco(dataset: Any, *, all_boxes: Sequence[Sequence[np.ndarray]] | None = None,
                  results_file: PathLike | None = None, verbose: bool = True
                  ) -> dict[str, Any]:
    """COCO bbox AP of a COCO-format dataset's images.

    With ``all_boxes`` the detections are converted (and written to ``results_file`` when
    given); with only ``results_file`` an existing results json is scored.
    """
    image_ids = [int(i) for i in dataset.ids]
    if all_boxes is not None:
        dets = coco_detections(all_boxes, image_ids, coco_label_to_cat_id(dataset))
        if results_file is not None:
            write_coco_results(dets, results_file)
    elif results_file is not None:
        dets = read_coco_results(results_file)
    else:
        raise ValueError("evaluate_coco needs all_boxes or results_file")
    out = coco_evaluate(dataset.coco, dets, image_ids, verbose=verbose)
    out["mAP"] = out["stats"]["AP"]
    out["metric"] = "COCO AP@[.5:.95] (bbox)"
    if results_file is not None:
        out["results_file"] = os.fspath(results_file)
    return out


def _coco_table(set_name: str, scores: Mapping[str, Any], n_images: int) -> str:
    title = f"COCO {set_name}: {n_images} images, {scores['metric']}"
    table = format_ap_table(title, scores["ap"], scores["mAP"], {"AP50": {
        k: ("n/a" if math.isnan(v) else f"{v:.4f}") for k, v in scores["ap50"].items()}},
        mean_label="AP")
    cells = [f"{k} {('n/a' if math.isnan(v) else f'{v:.4f}')}" for k, v in scores["stats"].items()]
    stats = "  ".join(cells[:6]) + "\n" + "  ".join(cells[6:])
    note = f"\nnote: {scores['note']}" if scores.get("note") else ""
    return f"{table}\n{stats}{note}"


# ----------------------------------------------------------------------------- whole runs

def _versions() -> dict[str, str]:
    import ssd

    return {"ssd": getattr(ssd, "__version__", "unknown"), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _coco_results_name(set_name: str) -> str:
    return f"bbox_{set_name}_results.json"


def evaluate(model: nn.Module, dataset: Any, *, save_folder: PathLike = "eval",
             set_name: str | None = None, device: str | torch.device | None = None,
             batch_size: int = 8, num_workers: int = 0, amp: bool = False,
             top_k: int | None = None, conf_thresh: float | None = None,
             nms_thresh: float | None = None, use_07_metric: bool | None = None,
             cleanup: bool = False, channels_last: bool = True,
             settings: Mapping[str, Any] | None = None, progress: bool = True,
             log: Callable[[str], None] = print, precision: str = "fp32") -> dict[str, Any]:
    """Detect on every image of ``dataset`` and score the detections (``eval.py``).

    Writes into ``save_folder``: ``detections.pkl`` (``all_boxes[class][image]``), the
    results files (VOC: ``results/det_<set>_<class>.txt``; COCO:
    ``bbox_<set>_results.json``), ``results.json`` with every number, and (VOC) the annotation
    cache under ``annotations_cache/``. ``cleanup`` removes the VOC results files afterwards.
    ``channels_last`` converts the model to that memory format (faster convolutions);
    ``precision`` is :func:`run_inference`'s.
    Prints the per-class table through ``log`` and returns the ``results.json`` content.
    """
    save_folder = Path(save_folder)
    save_folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    inf: InferenceResult = run_inference(
        model, dataset, device=device, batch_size=batch_size, num_workers=num_workers, amp=amp,
        top_k=top_k, conf_thresh=conf_thresh, nms_thresh=nms_thresh,
        channels_last=channels_last, progress=progress, precision=precision)
    save_detections_pkl(inf.all_boxes, save_folder / "detections.pkl")
    t_eval = time.perf_counter()
    log(f"Detected {inf.num_images} images in {inf.seconds:.1f} s "
        f"({inf.images_per_s:.2f} images/s on {inf.device}); scoring...")
    scores, table, set_name = _score(dataset, inf.all_boxes, save_folder, set_name,
                                     use_07_metric, cleanup)
    t_end = time.perf_counter()
    log(table)
    core = unwrap_model(model)
    run_settings = {
        "device": inf.device, "batch_size": batch_size, "num_workers": num_workers,
        "amp": inf.extra["amp"], "channels_last": inf.extra["channels_last"],
        "top_k": getattr(core, "top_k", top_k),
        "conf_thresh": conf_thresh if conf_thresh is not None else getattr(core, "conf_thresh",
                                                                           None),
        "nms_thresh": nms_thresh if nms_thresh is not None else getattr(core, "nms_thresh", None),
        "input_size": getattr(core, "size", None),
        "config": getattr(core, "cfg", {}).get("name"),
        **dict(settings or {}),
    }
    timing = {
        "inference_s": inf.seconds,
        "model_s": inf.extra["model_s"],
        "images_per_s": inf.images_per_s,
        "scoring_s": t_end - t_eval,
        "total_s": t_end - t_start,
        "end_to_end_images_per_s": inf.num_images / max(t_end - t_start, 1e-9),
    }
    return _finish(save_folder, dataset, set_name, scores, inf.num_images, run_settings,
                   timing, {"detections_pkl": os.fspath(save_folder / "detections.pkl")})


def _score(dataset: Any, all_boxes: Sequence[Sequence[np.ndarray]] | None,
           save_folder: Path, set_name: str | None, use_07_metric: bool | None,
           cleanup: bool, results_from: Path | None = None) -> tuple[dict, str, str]:
    n = len(dataset)
    if is_coco_dataset(dataset):
        set_name = set_name or str(getattr(dataset, "image_set", None) or getattr(
            dataset, "name", "coco"))
        if results_from is not None:
            path = results_from
            if path.is_dir():
                path = path / _coco_results_name(set_name)
            scores = evaluate_coco(dataset, results_file=path)
        else:
            scores = evaluate_coco(dataset, all_boxes=all_boxes,
                                   results_file=save_folder / _coco_results_name(set_name))
        return scores, _coco_table(set_name, scores, n), set_name
    vs = voc_set(dataset)
    if set_name:
        vs.set_name = set_name
    if results_from is not None:
        rdir = results_from
        if not (rdir / det_file_name(vs.set_name, vs.class_names[0])).exists() and \
                (rdir / RESULTS_SUBDIR).is_dir():
            rdir = rdir / RESULTS_SUBDIR
        scores = evaluate_voc(vs, results_dir=rdir, cachedir=save_folder / CACHE_SUBDIR,
                              use_07_metric=use_07_metric)
    else:
        rdir = save_folder / RESULTS_SUBDIR
        scores = evaluate_voc(vs, all_boxes=all_boxes, results_dir=rdir,
                              cachedir=save_folder / CACHE_SUBDIR, use_07_metric=use_07_metric)
        if cleanup:
            for path in scores["det_files"].values():
                Path(path).unlink(missing_ok=True)
            scores["det_files"] = {}
            if rdir.is_dir() and not any(rdir.iterdir()):
                shutil.rmtree(rdir)
    return scores, _voc_table(vs, scores, n), vs.set_name


def _finish(save_folder: Path, dataset: Any, set_name: str, scores: Mapping[str, Any],
            n_images: int, run_settings: Mapping[str, Any], timing: Mapping[str, Any],
            files: Mapping[str, Any]) -> dict[str, Any]:
    kind = "COCO" if is_coco_dataset(dataset) else "VOC"
    scores = dict(scores)
    files = dict(files)
    if scores.get("det_files"):
        files["det_files"] = scores.pop("det_files")
    else:
        scores.pop("det_files", None)
    if scores.get("results_file"):
        files["coco_results"] = scores.pop("results_file")
    files["results_json"] = os.fspath(save_folder / "results.json")
    out = {
        "dataset": kind,
        "set": set_name,
        "num_images": n_images,
        "mAP": scores.pop("mAP"),
        **scores,
        "settings": dict(run_settings),
        "timing": dict(timing),
        "files": files,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    write_results_json(out, save_folder / "results.json")
    return out


def evaluate_results(dataset: Any, results_from: PathLike, *, save_folder: PathLike = "eval",
                     set_name: str | None = None, use_07_metric: bool | None = None,
                     settings: Mapping[str, Any] | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score existing detections without a model (``eval.py --from_results``).

    ``results_from``: VOC: a folder with ``det_<set>_<class>.txt`` files (or its ``results/``
    subfolder, as :func:`evaluate` writes it); COCO: a results json or a folder holding
    ``bbox_<set>_results.json``. Writes ``results.json`` into ``save_folder``.
    """
    save_folder = Path(save_folder)
    results_from = Path(results_from)
    if not results_from.exists():
        raise FileNotFoundError(f"results folder/file not found: {results_from}")
    t0 = time.perf_counter()
    scores, table, set_name = _score(dataset, None, save_folder, set_name, use_07_metric,
                                     cleanup=False, results_from=results_from)
    log(table)
    timing = {"scoring_s": time.perf_counter() - t0}
    return _finish(save_folder, dataset, set_name, scores, len(dataset),
                   {"from_results": os.fspath(results_from), **dict(settings or {})}, timing,
                   {})


def run_validation(model: nn.Module, *, dataset: Any, device: str | torch.device | None = None,
                   batch_size: int = 8, num_workers: int = 0, amp: bool = False,
                   top_k: int = 200, conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                   use_07_metric: bool | None = None, cachedir: PathLike | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Evaluate ``model`` on a validation dataset, in memory (training's ``--eval_every``).

    ``model`` may be in either phase, in train mode and wrapped (DDP); its phase, train/eval
    mode and detection settings are restored afterwards. VOC-format datasets get VOC AP (no
    results files; ``cachedir`` caches the parsed annotations), COCO-format ones COCOeval
    (quietly).

    Returns ``{"mAP": float, "ap": {class: AP}, "metric": str, "num_images": int,
    "seconds": float, "images_per_s": float}``; COCO adds ``"stats"`` (AP, AP50, ...).
    ``mAP`` is NaN when no class has ground truth.
    """
    inf = run_inference(model, dataset, device=device, batch_size=batch_size,
                        num_workers=num_workers, amp=amp, top_k=top_k, conf_thresh=conf_thresh,
                        nms_thresh=nms_thresh, progress=progress, desc="validate")
    if is_coco_dataset(dataset):
        scores = evaluate_coco(dataset, all_boxes=inf.all_boxes, verbose=False)
        extra = {"stats": scores["stats"]}
    else:
        scores = evaluate_voc(voc_set(dataset), all_boxes=inf.all_boxes, cachedir=cachedir,
                              use_07_metric=use_07_metric)
        extra = {"num_gt": scores["num_gt"]}
    return {"mAP": scores["mAP"], "ap": scores["ap"], "metric": scores["metric"],
            "num_images": inf.num_images, "seconds": inf.seconds,
            "images_per_s": inf.images_per_s, **extra}
