"""COCO-style evaluation: detections to COCO results json, scored by COCOeval (bbox)."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..io import atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["COCO_STATS", "COCOPrecision", "coco_detections", "coco_evaluate", "coco_score",
           "read_coco_results", "write_coco_results"]

# The twelve numbers of COCOeval.summarize(), in its order.
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_detections(all_boxes: Sequence[Sequence[np.ndarray]], image_ids: Sequence[int],
                    label_to_cat_id: Mapping[int, int] | Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries from ``all_boxes``.

    Args:
        all_boxes: ``all_boxes[c][i]`` ``[n, 5]`` ``(x1, y1, x2, y2, score)`` in pixels of image
            ``i`` for class ``c`` (``c = 0`` is the background and is skipped).
        image_ids: COCO image id of each image index.
        label_to_cat_id: 0-based label (``c - 1``) -> COCO category id.

    Returns:
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` dicts (pixels, xywh).
    """
    out = []
    for c in range(1, len(all_boxes)):
        cat = int(label_to_cat_id[c - 1])
        for i, dets in enumerate(all_boxes[c]):
            dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
            if not len(dets):
                continue
            img_id = int(image_ids[i])
            xywh = np.stack([dets[:, 0], dets[:, 1], dets[:, 2] - dets[:, 0],
                             dets[:, 3] - dets[:, 1]], axis=1)
            for (x, y, w, h), score in zip(xywh.round(3).tolist(), dets[:, 4].tolist()):
                out.append({"image_id": img_id, "category_id": cat, "bbox": [x, y, w, h],
                            "score": round(score, 5)})
    return out


def write_coco_results(results: Sequence[Mapping[str, Any]], path: PathLike) -> Path:
    """Write COCO results json atomically."""
    return atomic_write_text(json.dumps(list(results), separators=(",", ":")), path)


def read_coco_results(path: PathLike) -> list[dict[str, Any]]:
    """Read a COCO results json (a list of detection dicts), with a clear error if it is not."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"COCO results file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list) or any(
            not isinstance(d, dict) or not {"image_id", "category_id", "bbox", "score"} <= d.keys()
            for d in data):
        raise ValueError(f"{path}: expected a list of {{image_id, category_id, bbox, score}} "
                         f"objects (COCO detection results format)")
    return data


@dataclass
class COCOPrecision:
    """COCOeval's interpolated precision over all areas at 100 detections per image.

    ``precision`` [T, R, K]: at IoU threshold ``iou_thrs[t]``, recall ``rec_thrs[r]``, for
    category ``names[k]``; -1 where the category has no ground truth.
    """

    iou_thrs: np.ndarray  # [T]
    rec_thrs: np.ndarray  # [R]
    precision: np.ndarray  # [T, R, K]
    names: list[str]  # [K]


def coco_evaluate(coco_gt: Any, results: Sequence[Mapping[str, Any]] | PathLike,
                  image_ids: Sequence[int] | None = None, verbose: bool = True
                  ) -> dict[str, Any]:
    """Score bbox detections with ``COCOeval``; the numbers of :func:`coco_score`."""
    return coco_score(coco_gt, results, image_ids, verbose)[0]


def coco_score(coco_gt: Any, results: Sequence[Mapping[str, Any]] | PathLike,
               image_ids: Sequence[int] | None = None, verbose: bool = True
               ) -> tuple[dict[str, Any], COCOPrecision | None]:
    """Score bbox detections with ``COCOeval``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` with the ground truth.
        results: COCO results entries (see :func:`coco_detections`) or the path of such a json.
        image_ids: the evaluated images (default: all of ``coco_gt``); images without
            detections count as misses.
        verbose: print COCOeval's own summary.

    Returns:
        ``{"stats": {name: value for COCO_STATS}, "ap": {category name: AP@[.5:.95]},
        "ap50": {...}, "num_detections": n}``. Values COCOeval reports as -1 (no ground truth in
        that area range / category) are NaN. With no detections at all every defined number is
        0.0 and ``"note"`` says so (COCOeval cannot load an empty result list).
        Second, the precision arrays behind the numbers (``None`` without detections).
    """
    from pycocotools.cocoeval import COCOeval

    if isinstance(results, (str, os.PathLike)):
        results = read_coco_results(results)
    results = copy.deepcopy(list(results))  # loadRes writes ids and areas into the dicts
    if image_ids is None:
        image_ids = sorted(coco_gt.getImgIds())
    image_ids = [int(i) for i in image_ids]
    cat_ids = sorted(coco_gt.getCatIds())
    names = {c["id"]: c["name"] for c in coco_gt.loadCats(cat_ids)}
    known = set(coco_gt.getImgIds())
    stray = {d["image_id"] for d in results} - known
    if stray:
        raise ValueError(f"{len(stray)} detection(s) refer to images not in the ground truth, "
                         f"e.g. image_id {sorted(stray)[0]}")
    gt_counts = {c: len(coco_gt.getAnnIds(imgIds=image_ids, catIds=[c], iscrowd=False))
                 for c in cat_ids}

    if not results:
        zero = {k: 0.0 for k in COCO_STATS}
        per_class = {names[c]: (0.0 if gt_counts[c] else math.nan) for c in cat_ids}
        return {"stats": zero, "ap": per_class, "ap50": dict(per_class), "num_detections": 0,
                "note": "no detections: every AP and AR is 0"}, None

    # pycocotools < 2.0.11 needs these keys in the ground truth to build the results object.
    coco_gt.dataset.setdefault("info", {})
    coco_gt.dataset.setdefault("licenses", [])
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = image_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {k: (float(v) if v > -1 else math.nan) for k, v in zip(COCO_STATS, ev.stats)}
    # precision: [T iou thresholds, R recall points, K categories, A areas, M max dets]
    precision = ev.eval["precision"]
    ap, ap50 = {}, {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        ap[names[c]] = float(p[p > -1].mean()) if (p > -1).any() else math.nan
        ap50[names[c]] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else math.nan
    curves = COCOPrecision(np.asarray(ev.params.iouThrs, dtype=np.float64),
                           np.asarray(ev.params.recThrs, dtype=np.float64),
                           np.asarray(precision[:, :, :, 0, -1], dtype=np.float64),
                           [names[c] for c in ev.params.catIds])
    return {"stats": stats, "ap": ap, "ap50": ap50, "num_detections": len(results)}, curves
