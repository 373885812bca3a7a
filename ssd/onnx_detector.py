"""A detector on ONNX Runtime, NumPy and OpenCV only: no PyTorch needed to deploy.

>>> from ssd import OnnxDetector
>>> det = OnnxDetector("ssd300.onnx")           # written by `python -m ssd.export`
>>> result = det.predict("photo.jpg", threshold=0.5)
>>> result.boxes, result.scores, result.class_names

It gives :class:`ssd.Detector`'s results (same :class:`~ssd.detections.Detections`) for
either exported graph: with the default graph (``scores`` + ``boxes``) the detection step
(per-class top-k, greedy NMS) runs in NumPy here; a ``--nms`` graph does it inside.
Nothing on this path imports torch.
"""

from __future__ import annotations

import json
import os
import platform
from typing import Any, Sequence, Union

import numpy as np

from .data.image_io import load_bgr_image
from .data.transforms import base_transform
from .detections import Detections, collect_detections, to_dicts
from .precision import resolve_precision

__all__ = ["OnnxDetector", "detect_numpy", "nms_numpy"]

PathLike = Union[str, "os.PathLike[str]"]
_PREFIX = "ssd."


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float) -> np.ndarray:
    """Greedy NMS: ``boxes [n, 4]`` corners, ``scores [n]`` -> kept indices, best first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_thresh``
    (torchvision's rule; IoU in float64).
    """
    b = boxes.astype(np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        h = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter)
        order = rest[~(iou > iou_thresh)]
    return np.asarray(keep, dtype=np.int64)


def detect_numpy(scores: np.ndarray, boxes: np.ndarray, top_k: int = 200,
                 conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                 max_per_image: int | None = None) -> list[np.ndarray]:
    """:func:`ssd.detection.detect` for one image in NumPy (background class 0).

    Args:
        scores: ``[P, C]`` softmax scores.
        boxes: ``[P, 4]`` decoded relative corners.

    Returns:
        ``out[c]``: float32 ``[n, 5]`` rows ``(score, x1, y1, x2, y2)`` of class ``c``, best
        first (``out[0]``, the background, is empty).
    """
    num_classes = scores.shape[1]
    k = min(int(top_k), scores.shape[0])
    out = [np.zeros((0, 5), np.float32)]
    for c in range(1, num_classes):
        s = scores[:, c]
        cand = np.flatnonzero(s > conf_thresh)
        if cand.size > k:  # the k best candidates, as topk picks them
            cand = cand[np.argsort(-s[cand], kind="stable")[:k]]
        kept = cand[nms_numpy(boxes[cand], s[cand], nms_thresh)] if cand.size else cand
        out.append(np.concatenate([s[kept, None], boxes[kept]], axis=1).astype(np.float32))
    if max_per_image is not None:
        all_scores = np.concatenate([rows[:, 0] for rows in out])
        if all_scores.size > max_per_image:
            cut = np.sort(all_scores)[::-1][max_per_image - 1] if max_per_image else np.inf
            out = [rows[rows[:, 0] >= cut] for rows in out]
    return out


def _default_names(config: str) -> tuple[str, ...]:
    from .data.classes import COCO_CLASSES, VOC_CLASSES

    return COCO_CLASSES if str(config).upper().startswith("COCO") else VOC_CLASSES


class OnnxDetector:
    """An exported SSD (``python -m ssd.export``) that takes images and returns
    :class:`~ssd.detections.Detections`, like :class:`ssd.Detector`.

    Args:
        path: the ``.onnx`` file.
        class_names: foreground names (default: the ones stored in the file, else VOC's or
            COCO's by its config).
        batch_size: images per run (a fixed-batch graph uses its own).
        providers: ONNX Runtime execution providers (default CPU).
        precision: ``'fp32'``, ``'bf16'`` or ``'auto'``: bf16 GEMMs where ONNX Runtime has
            them (Arm CPUs with BF16) and the CPU computes bf16 natively; elsewhere fp32
            (``'bf16'`` warns).
        top_k, conf_thresh, nms_thresh, max_per_image: detection settings (as in
            :func:`ssd.detection.detect`; default 200, 0.01, 0.45, no cap) for the default
            graph; a ``--nms`` graph has its own (asking for others is an error).
        threads: intra-op threads (default: ONNX Runtime's choice).
    """

    def __init__(self, path: PathLike, class_names: Sequence[str] | None = None, *,
                 batch_size: int = 8, providers: Sequence[Any] | None = None,
                 precision: str = "fp32", top_k: int | None = None,
                 conf_thresh: float | None = None, nms_thresh: float | None = None,
                 max_per_image: int | None = None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {os.fspath(path)!r} not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.precision = resolve_precision(precision, "cpu")
        if self.precision == "bf16" and platform.machine().lower() in ("aarch64", "arm64"):
            options.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "1")
        else:
            self.precision = "fp32"  # ONNX Runtime's x86 CPU kernels have no bf16 fast path
        try:
            self.session = ort.InferenceSession(os.fspath(path), options,
                                                providers=list(providers or
                                                               ["CPUExecutionProvider"]))
        except Exception as e:  # ONNX Runtime raises its own exception types
            raise ValueError(f"{os.fspath(path)}: ONNX Runtime cannot load it: {e}") from e
        self.path = os.fspath(path)
        meta = {k[len(_PREFIX):]: json.loads(v)
                for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                if k.startswith(_PREFIX)}
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or "scores" not in outputs or "boxes" not in outputs:
            raise ValueError(f"{self.path}: not an SSD graph exported by ssd.export (inputs "
                             f"{[i.name for i in inputs]}, outputs {outputs})")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        self.size = int(meta.get("size") or shape[-1])
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.batch_size = int(self.fixed_batch or batch_size)
        self.mean = tuple(float(m) for m in meta.get("mean", (104.0, 117.0, 123.0)))
        self.normalize = meta.get("normalize")  # torchvision-style rule, or None
        self.has_nms = "num_detections" in outputs
        num_classes = int(meta.get("num_classes") or self.session.get_outputs()[
            outputs.index("scores")].shape[-1])
        names = class_names if class_names is not None else meta.get("class_names")
        if names is None:
            names = _default_names(meta.get("config", ""))
        if len(names) != num_classes - 1:
            raise ValueError(f"{self.path}: the graph has {num_classes - 1} foreground classes "
                             f"but {len(names)} class names were given")
        self.class_names = [str(n) for n in names]
        asked = {"top_k": top_k, "conf_thresh": conf_thresh, "nms_thresh": nms_thresh,
                 "max_per_image": max_per_image}
        if self.has_nms:
            self.settings = {k: meta.get(k) for k in asked}
            clash = {k: v for k, v in asked.items() if v is not None and v != self.settings[k]}
            if clash:
                raise ValueError(f"{self.path} has NMS inside with {self.settings}; it cannot "
                                 f"run with {clash} (export it again, or export without --nms)")
            self._outputs = ["det_boxes", "det_scores", "det_labels", "num_detections"]
        else:
            defaults = {"top_k": 200, "conf_thresh": 0.01, "nms_thresh": 0.45,
                        "max_per_image": None}
            self.settings = {k: defaults[k] if v is None else v for k, v in asked.items()}
            self._outputs = ["scores", "boxes"]

    def _preprocess(self, bgr: np.ndarray) -> np.ndarray:
        """The network input of one image: ``Detector``'s rule, in NumPy."""
        if self.normalize is None:
            hwc = base_transform(bgr, self.size, self.mean)
            return np.ascontiguousarray(hwc.transpose(2, 0, 1)[::-1])  # BGR HWC -> RGB CHW
        import cv2

        rule = self.normalize
        img = cv2.resize(bgr, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        rgb = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)).astype(np.float32)
        mean = np.asarray(rule["mean"], np.float32)[:, None, None]
        std = np.asarray(rule["std"], np.float32)[:, None, None]
        return np.ascontiguousarray((rgb / np.float32(rule["scale"]) - mean) / std)

    def _run(self, batch: np.ndarray) -> list[np.ndarray]:
        n = batch.shape[0]
        if self.fixed_batch and n < self.fixed_batch:  # pad a fixed-batch graph's last run
            pad = np.zeros((self.fixed_batch - n, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, pad])
        return [o[:n] for o in self.session.run(self._outputs, {self.input_name: batch})]

    def _per_class(self, outputs: list[np.ndarray], b: int) -> list[np.ndarray]:
        """Image ``b``'s rows ``(score, x1, y1, x2, y2)`` per class (relative boxes)."""
        if not self.has_nms:
            scores, boxes = outputs
            return detect_numpy(scores[b], boxes[b], **self.settings)
        det_boxes, det_scores, det_labels, count = outputs
        n = int(count[b])
        rows = np.concatenate([det_scores[b, :n, None], det_boxes[b, :n]], axis=1)
        labels = det_labels[b, :n]
        return [np.zeros((0, 5), np.float32)] + [
            rows[labels == c].astype(np.float32) for c in range(len(self.class_names))]

    def predict(self, images: Any, threshold: float = 0.5, as_dict: bool = False) -> Any:
        """Detect objects; the arguments and results are :meth:`ssd.Detector.predict`'s."""
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        out: list[Detections] = []
        for start in range(0, len(items), self.batch_size):
            chunk = [load_bgr_image(im) for im in items[start:start + self.batch_size]]
            outputs = self._run(np.stack([self._preprocess(bgr) for bgr, _ in chunk]))
            for b, (bgr, path) in enumerate(chunk):
                h, w = bgr.shape[:2]
                scale = np.array([w, h, w, h], np.float32)
                per_class = [np.concatenate([rows[:, 1:] * scale, rows[:, :1]], axis=1)
                             for rows in self._per_class(outputs, b)]
                out.append(collect_detections(per_class, (h, w), threshold, self.class_names,
                                              path))
        if as_dict:
            dicts = to_dicts(out)
            return dicts[0] if single else dicts
        return out[0] if single else out

    __call__ = predict

    def __repr__(self) -> str:
        kind = "NMS in graph" if self.has_nms else "NMS in NumPy"
        return (f"OnnxDetector(SSD{self.size}, {len(self.class_names)} classes, {kind}, "
                f"{self.precision})")
