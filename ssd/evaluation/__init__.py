"""Evaluation: official VOC AP, COCO AP, batched inference, result files and tables.

``voc_eval``/``voc_ap`` keep the classic signatures; :func:`evaluate` is ``eval.py``;
:func:`run_validation` is the training loop's ``--eval_every`` hook. Each benchmark is one
:class:`Evaluator` (:func:`evaluator_for` picks it for a dataset).
"""

from .coco import COCO_STATS, coco_detections, coco_evaluate, write_coco_results
from .evaluators import COCOEvaluator, Evaluator, PRCurve, Scores, VOCEvaluator, evaluator_for
from .inference import InferenceResult, detection_mode, resolve_device, run_inference
from .results import format_ap_table, save_detections_pkl, write_results_json
from .runner import evaluate, evaluate_coco, evaluate_results, evaluate_voc, run_validation
from .voc import mean_ap, parse_rec, voc_ap, voc_eval

__all__ = [
    "COCO_STATS",
    "COCOEvaluator",
    "Evaluator",
    "InferenceResult",
    "PRCurve",
    "Scores",
    "VOCEvaluator",
    "coco_detections",
    "coco_evaluate",
    "detection_mode",
    "evaluate",
    "evaluate_coco",
    "evaluate_results",
    "evaluate_voc",
    "evaluator_for",
    "format_ap_table",
    "mean_ap",
    "parse_rec",
    "resolve_device",
    "run_inference",
    "run_validation",
    "save_detections_pkl",
    "voc_ap",
    "voc_eval",
    "write_coco_results",
    "write_results_json",
]
