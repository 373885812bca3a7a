"""PASCAL VOC detection AP with the official devkit's rules (REFERENCE.md section 7).

The numbers are those of the widely used Python ``voc_eval``/``voc_ap`` pair: detections in
1-based pixel coordinates, ground truth read unchanged from the XML, IoU with ``+1`` on widths and
heights, a hit needs IoU > ``ovthresh``, each ground-truth object is matched at most once,
difficult objects count neither as misses nor as false positives, and AP is the VOC2007
11-point rule or the VOC2010+ area rule. The arithmetic is done in the same order as that code
(float64 throughout) so the results agree to the last bit; only the per-detection Python loop is
replaced by array operations.

A class without any non-difficult ground truth has no defined recall: :func:`voc_eval` returns
``rec`` filled with NaN and ``ap = nan`` for it (the classic code divided by zero and gave 0 or
NaN depending on the metric), and :func:`mean_ap` leaves such classes out of the mean, as
COCOeval does for categories without ground truth.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from ..io import atomic_save, atomic_write_text
from ..safe_pickle import safe_pickle_load

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "ClassDetections",
    "det_file_name",
    "format_det_line",
    "load_annotations",
    "mean_ap",
    "parse_rec",
    "read_det_file",
    "read_imageset",
    "voc_ap",
    "voc_eval",
    "voc_eval_class",
    "write_det_file",
]

# Detections are compared with every ground-truth box of their image in chunks of this many
# rows, which bounds the memory of the vectorised IoU at about chunk * max_gt * 8 bytes per array.
_CHUNK = 16384


def _fill(template: str, value: str) -> str:
    """Fill a ``{:s}``/``{}`` or ``%s`` path template."""
    if "{" in template:
        return template.format(value)
    if "%s" in template:
        return template % value
    raise ValueError(f"path template {template!r} has no '{{:s}}' or '%s' placeholder")


def _number(text: str | None, what: str, path: PathLike) -> int | float:
    if text is None:
        raise ValueError(f"{path}: object has no <{what}>")
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        # A few VOC2012-era files carry fractional corners: keep them as written.
        return float(text)
    except ValueError:
        raise ValueError(f"{path}: <{what}> is not a number: {text!r}") from None


def parse_rec(filename: PathLike) -> list[dict[str, Any]]:
    """Read the objects of one VOC XML annotation file.

    Returns one dict per ``<object>`` with ``name``, ``pose``, ``truncated``, ``difficult`` (ints,
    0 when absent) and ``bbox`` ``[xmin, ymin, xmax, ymax]`` exactly as written (1-based pixels).
    """
    try:
        tree = ET.parse(filename)
    except FileNotFoundError:
        raise FileNotFoundError(f"VOC annotation not found: {filename}") from None
    except ET.ParseError as e:
        raise ValueError(f"{filename}: not a valid XML annotation ({e})") from None
    objects = []
    for obj in tree.findall("object"):
        name = obj.findtext("name")
        if name is None:
            raise ValueError(f"{filename}: <object> without <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ValueError(f"{filename}: object {name!r} has no <bndbox>")
        objects.append({
            "name": name.strip(),
            "pose": (obj.findtext("pose") or "").strip(),
            "truncated": int(_number(obj.findtext("truncated") or "0", "truncated", filename)),
            "difficult": int(_number(obj.findtext("difficult") or "0", "difficult", filename)),
            "bbox": [_number(bndbox.findtext(k), k, filename)
                     for k in ("xmin", "ymin", "xmax", "ymax")],
        })
    return objects


def read_imageset(imagesetfile: PathLike) -> list[str]:
    """Image ids of an ``ImageSets/Main/<set>.txt`` file (first column; blank lines skipped)."""
    try:
        text = Path(imagesetfile).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"image set file not found: {imagesetfile}") from None
    # Per-class set files ("<id> <flag>") also work: only the first column is an id.
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def _cache_path(cachedir: PathLike, imagesetfile: PathLike, annopath: str,
                imagenames: Sequence[str]) -> Path:
    """Cache file name tied to the image set (its path and contents), the annotation path and
    the annotation files' modification times (an edited XML invalidates the cache)."""
    h = hashlib.sha1()
    h.update(os.path.abspath(os.fspath(imagesetfile)).encode())
    h.update(b"\0" + annopath.encode() + b"\0")
    h.update("\n".join(imagenames).encode())
    for name in imagenames:
        try:
            h.update(str(os.stat(_fill(annopath, name)).st_mtime_ns).encode())
        except OSError:
            h.update(b"-")  # a missing file fails later, when it is parsed
    stem = Path(imagesetfile).stem
    return Path(cachedir) / f"annots_{stem}_{h.hexdigest()[:16]}.pkl"


def load_annotations(annopath: str, imagenames: Sequence[str], cachedir: PathLike | None = None,
                     imagesetfile: PathLike | None = None) -> dict[str, list[dict[str, Any]]]:
    """Parse the XML of every image (``annopath.format(id)``), optionally through a pickle cache.

    The cache lives in ``cachedir`` under a name derived from the image set file's path and
    contents, from ``annopath`` and from the XML files' modification times, so a cache written
    for another set (or before an annotation was edited) is never reused; a cache that is
    unreadable or lacks an image is rebuilt.
    """
    cache = None
    if cachedir is not None:
        cache = _cache_path(cachedir, imagesetfile or "", annopath, imagenames)
        if cache.is_file():
            try:
                with open(cache, "rb") as f:
                    recs = safe_pickle_load(f)
                if isinstance(recs, dict) and all(n in recs for n in imagenames):
                    return recs
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
                pass  # a broken cache is rebuilt below
    recs = {name: parse_rec(_fill(annopath, name)) for name in imagenames}
    if cache is not None:
        atomic_save(recs, cache, saver=lambda obj, f: pickle.dump(obj, f, protocol=4))
    return recs


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision from a recall/precision curve.

    ``use_07_metric=True``: the VOC2007 11-point rule, the mean over ``t = 0, 0.1, ..., 1`` of the
    best precision at recall >= t (0 when that recall is never reached). Otherwise the VOC2010+
    area under the precision envelope (precision made non-increasing from the right), summed where
    recall changes. Empty curves give 0.0.
    """
    rec = np.asarray(rec, dtype=np.float64)
    prec = np.asarray(prec, dtype=np.float64)
    if rec.shape != prec.shape or rec.ndim != 1:
        raise ValueError(f"rec and prec must be 1-D of equal length, got {rec.shape}, {prec.shape}")
    if use_07_metric:
        ap = 0.0
        # np.arange's thresholds (0.30000000000000004, ...) are kept on purpose: they are the
        # ones the reference Python devkit compares against.
        for t in np.arange(0.0, 1.1, 0.1):
            above = rec >= t
            p = np.max(prec[above]) if above.any() else 0.0
            ap = ap + p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@dataclass
class ClassDetections:
    """Detections of one class: ``image_ids`` [N] str, ``scores`` [N], ``boxes`` [N, 4] float64
    in 1-based pixel corners, in any order."""

    image_ids: list[str]
    scores: np.ndarray
    boxes: np.ndarray


def voc_eval_class(recs: Mapping[str, list[dict[str, Any]]], imagenames: Sequence[str],
                   classname: str, dets: ClassDetections, ovthresh: float = 0.5,
                   use_07_metric: bool = True, source: str = "detections",
                   ignore_case: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Score one class's detections against parsed annotations; returns ``(rec, prec, ap)``.

    ``recs`` maps image id -> objects (:func:`parse_rec`); ``imagenames`` is the evaluated set.
    ``source`` names the detections in error messages. ``ignore_case`` matches object names
    case-insensitively (as the datasets read them); the devkit compares them exactly.
    """
    wanted = classname.lower() if ignore_case else classname
    # Ground truth of this class, padded per image: [n_images, G, 4] boxes, [n_images, G] flags.
    index = {name: i for i, name in enumerate(imagenames)}
    per_image = []
    npos = 0
    for name in imagenames:
        if name not in recs:
            raise KeyError(f"no annotation loaded for image {name!r}")
        objs = [o for o in recs[name]
                if (o["name"].lower() if ignore_case else o["name"]) == wanted]
        per_image.append(objs)
        npos += sum(1 for o in objs if not o["difficult"])
    n_gt_max = max((len(o) for o in per_image), default=0)
    gt_boxes = np.zeros((len(imagenames), max(n_gt_max, 1), 4), dtype=np.float64)
    gt_valid = np.zeros((len(imagenames), max(n_gt_max, 1)), dtype=bool)
    gt_difficult = np.zeros_like(gt_valid)
    for i, objs in enumerate(per_image):
        for j, o in enumerate(objs):
            gt_boxes[i, j] = o["bbox"]
            gt_valid[i, j] = True
            gt_difficult[i, j] = bool(o["difficult"])

    confidence = np.asarray(dets.scores, dtype=np.float64).reshape(-1)
    boxes = np.asarray(dets.boxes, dtype=np.float64).reshape(-1, 4)
    if len(dets.image_ids) != confidence.size or boxes.shape[0] != confidence.size:
        raise ValueError(f"{source}: image_ids, scores and boxes differ in length")
    try:
        img = np.array([index[i] for i in dets.image_ids], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{source}: image {e.args[0]!r} is not in the evaluated image set") \
            from None

    # Same sort call as the reference code, so ties come out in the same order.
    order = np.argsort(-confidence)
    img = img[order]
    boxes = boxes[order]
    nd = confidence.size

    ovmax = np.full(nd, -np.inf)
    jmax = np.zeros(nd, dtype=np.int64)
    for s in range(0, nd, _CHUNK):
        bb = boxes[s:s + _CHUNK, None, :]  # [n, 1, 4]
        gt = gt_boxes[img[s:s + _CHUNK]]  # [n, G, 4]
        ixmin = np.maximum(gt[..., 0], bb[..., 0])
        iymin = np.maximum(gt[..., 1], bb[..., 1])
        ixmax = np.minimum(gt[..., 2], bb[..., 2])
        iymax = np.minimum(gt[..., 3], bb[..., 3])
        iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
        ih = np.maximum(iymax - iymin + 1.0, 0.0)
        inters = iw * ih
        uni = ((bb[..., 2] - bb[..., 0] + 1.0) * (bb[..., 3] - bb[..., 1] + 1.0)
               + (gt[..., 2] - gt[..., 0] + 1.0) * (gt[..., 3] - gt[..., 1] + 1.0) - inters)
        with np.errstate(divide="ignore", invalid="ignore"):
            overlaps = inters / uni
        overlaps = np.where(gt_valid[img[s:s + _CHUNK]], overlaps, -np.inf)
        jmax[s:s + _CHUNK] = np.argmax(overlaps, axis=1)
        ovmax[s:s + _CHUNK] = np.max(overlaps, axis=1)

    # A detection's best ground truth does not depend on what was matched before it, so the
    # sequential rule reduces to: the first (highest-scoring) hit on a non-difficult object is a
    # true positive, later hits on it are false positives, hits on difficult objects are ignored.
    hit = ovmax > ovthresh
    difficult = gt_difficult[img, jmax] & hit
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    fp[~hit] = 1.0
    claim = np.flatnonzero(hit & ~difficult)
    if claim.size:
        key = img[claim] * gt_boxes.shape[1] + jmax[claim]
        _, first = np.unique(key, return_index=True)
        tp[claim[first]] = 1.0
        fp[claim] = 1.0 - tp[claim]

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if npos == 0:
        return np.full(nd, np.nan), prec, math.nan
    rec = tp / float(npos)
    return rec, prec, voc_ap(rec, prec, use_07_metric)


def read_det_file(path: PathLike) -> ClassDetections:
    """Read a ``<image_id> <score> <x1> <y1> <x2> <y2>`` results file."""
    ids: list[str] = []
    values: list[list[float]] = []
    try:
        f = open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"detection results file not found: {path}") from None
    with f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{n}: expected '<image_id> <score> <x1> <y1> <x2> <y2>',"
                                 f" got {line.strip()!r}")
            try:
                values.append([float(v) for v in parts[1:]])
            except ValueError:
                raise ValueError(f"{path}:{n}: non-numeric value in {line.strip()!r}") from None
            ids.append(parts[0])
    arr = np.array(values, dtype=np.float64).reshape(-1, 5)
    return ClassDetections(ids, arr[:, 0].copy(), arr[:, 1:].copy())


def voc_eval(detpath: str, annopath: str, imagesetfile: PathLike, classname: str,
             cachedir: PathLike | None = None, ovthresh: float = 0.5,
             use_07_metric: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """The classic VOC evaluation of one class; returns ``(rec, prec, ap)``.

    Args:
        detpath: results file template, ``detpath.format(classname)`` (``%s`` also accepted).
        annopath: annotation template, ``annopath.format(image_id)`` (``%s`` also accepted).
        imagesetfile: text file with one image id per line.
        classname: class to evaluate.
        cachedir: folder for the parsed-annotation cache (keyed to the image set); ``None``
            parses the XML every call.
        ovthresh: IoU a detection must exceed to be a hit.
        use_07_metric: VOC2007 11-point AP if true, area AP otherwise.

    A class with no detections gives empty ``rec``/``prec`` and ``ap = 0.0``; a class without
    non-difficult ground truth gives ``ap = nan`` (see the module docstring).
    """
    imagenames = read_imageset(imagesetfile)
    recs = load_annotations(annopath, imagenames, cachedir, imagesetfile)
    detfile = _fill(detpath, classname)
    return voc_eval_class(recs, imagenames, classname, read_det_file(detfile), ovthresh,
                          use_07_metric, source=str(detfile))


def mean_ap(aps: Iterable[float]) -> float:
    """Mean of the defined (non-NaN) APs; NaN when none is defined."""
    vals = [a for a in aps if not math.isnan(a)]
    return float(np.mean(vals)) if vals else math.nan


def det_file_name(set_name: str, classname: str) -> str:
    """``det_<set>_<class>.txt``, the name the VOC devkit and ssd.pytorch use."""
    return f"det_{set_name}_{classname}.txt"


def format_det_line(image_id: str, score: float, x1: float, y1: float, x2: float,
                    y2: float) -> str:
    """One results line: score to 3 decimals, corners to 1 decimal."""
    return f"{image_id} {score:.3f} {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}\n"


def write_det_file(path: PathLike, image_ids: Sequence[str],
                   dets_per_image: Sequence[np.ndarray]) -> Path:
    """Write one class's results file atomically.

    ``dets_per_image[i]`` is ``[n, 5]`` ``(x1, y1, x2, y2, score)`` in 0-based continuous pixels
    (relative box times image size); the file gets 1-based corners (``+1``), as the devkit
    expects.
    """
    lines = []
    for image_id, dets in zip(image_ids, dets_per_image):
        for x1, y1, x2, y2, score in np.asarray(dets, dtype=np.float64).reshape(-1, 5):
            lines.append(format_det_line(image_id, score, x1 + 1, y1 + 1, x2 + 1, y2 + 1))
    return atomic_write_text("".join(lines), path)
