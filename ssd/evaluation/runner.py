"""Whole evaluations: model + dataset -> detections -> benchmark scores, tables and files.

:func:`evaluate` is what ``eval.py`` runs; :func:`evaluate_results` scores an existing results
folder without a model; :func:`run_validation` is the in-memory variant the training loop's
``--eval_every`` calls. What differs between benchmarks (VOC, COCO) lives in their evaluators
(:mod:`ssd.evaluation.evaluators`); :func:`~ssd.evaluation.evaluators.evaluator_for` picks one.
"""

from __future__ import annotations

import datetime
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np
import torch
from torch import nn

from .evaluators import Evaluator, Scores, evaluator_for
from .evaluators.coco import coco_label_to_cat_id, evaluate_coco, is_coco_dataset
from .evaluators.voc import (
    RESULTS_SUBDIR,
    VOCSet,
    dataset_class_names,
    default_use_07_metric,
    evaluate_voc,
    voc_set,
)
from .inference import InferenceResult, run_inference, unwrap_model
from .results import save_detections_pkl, write_results_json

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "PR_CURVES",
    "RESULTS_SUBDIR",
    "VOCSet",
    "coco_label_to_cat_id",
    "dataset_class_names",
    "default_use_07_metric",
    "evaluate",
    "evaluate_coco",
    "evaluate_results",
    "evaluate_voc",
    "is_coco_dataset",
    "run_validation",
    "voc_set",
]

CACHE_SUBDIR = "annotations_cache"
PR_CURVES = "pr_curves.png"


# ----------------------------------------------------------------------------- whole runs

def _versions() -> dict[str, str]:
    import ssd

    return {"ssd": getattr(ssd, "__version__", "unknown"), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


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
    ``bbox_<set>_results.json``), ``results.json`` with every number, ``pr_curves.png`` (when
    matplotlib is installed) and (VOC) the annotation cache under ``annotations_cache/``.
    ``cleanup`` removes the VOC results files afterwards.
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
    ev = evaluator_for(dataset, set_name=set_name, use_07_metric=use_07_metric,
                       cachedir=save_folder / CACHE_SUBDIR)
    files = ev.write_results(inf.all_boxes, save_folder)
    scores = ev.score_files(files)  # the numbers of the files as written (VOC rounds them)
    if cleanup:
        files = ev.remove_results(files)
    t_end = time.perf_counter()
    log(ev.format_table(scores, inf.num_images))
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
    return _finish(save_folder, ev, scores, inf.num_images, run_settings, timing,
                   {"detections_pkl": os.fspath(save_folder / "detections.pkl"), **files}, log)


def _save_plot(ev: Evaluator, scores: Scores, path: Path,
               log: Callable[[str], None]) -> str | None:
    """Draw the PR curves; a missing matplotlib skips them (it is an optional extra)."""
    try:
        ev.save_plot(scores, path)
    except ImportError as e:
        log(f"{path.name} not drawn: {e} (pip install 'ssd[plots]')")
        return None
    log(f"PR curves drawn in {path}")
    return os.fspath(path)


def _finish(save_folder: Path, ev: Evaluator, scores: Scores, n_images: int,
            run_settings: Mapping[str, Any], timing: Mapping[str, Any],
            files: Mapping[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    summary = dict(scores.summary)
    files = {**files, "results_json": os.fspath(save_folder / "results.json")}
    plot = _save_plot(ev, scores, save_folder / PR_CURVES, log)
    if plot is not None:
        files["pr_curves"] = plot
    out = {
        "dataset": ev.kind,
        "set": ev.set_name,
        "num_images": n_images,
        "mAP": summary.pop("mAP"),
        **summary,
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
    ``bbox_<set>_results.json``. Writes ``results.json`` and ``pr_curves.png`` into
    ``save_folder``.
    """
    save_folder = Path(save_folder)
    results_from = Path(results_from)
    if not results_from.exists():
        raise FileNotFoundError(f"results folder/file not found: {results_from}")
    t0 = time.perf_counter()
    ev = evaluator_for(dataset, set_name=set_name, use_07_metric=use_07_metric,
                       cachedir=save_folder / CACHE_SUBDIR)
    files = ev.find_results(results_from)
    scores = ev.score_files(files)
    log(ev.format_table(scores, len(dataset)))
    timing = {"scoring_s": time.perf_counter() - t0}
    return _finish(save_folder, ev, scores, len(dataset),
                   {"from_results": os.fspath(results_from), **dict(settings or {})}, timing,
                   files, log)


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
    ev = evaluator_for(dataset, use_07_metric=use_07_metric, cachedir=cachedir, verbose=False)
    scores = ev.score(inf.all_boxes).summary
    return {"mAP": scores["mAP"], "ap": scores["ap"], "metric": scores["metric"],
            "num_images": inf.num_images, "seconds": inf.seconds,
            "images_per_s": inf.images_per_s, **{k: scores[k] for k in ev.validation_keys}}
