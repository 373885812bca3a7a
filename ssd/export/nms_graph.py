"""SSD's detection step (:func:`ssd.detection.detect`) as ONNX nodes.

Built from ONNX ``TopK``, ``GatherND`` and ``NonMaxSuppression`` with fixed output shapes, so
the graph runs the same in every runtime and has no Python in it. The steps are detect's:

1. per image and foreground class, the ``top_k`` best-scoring priors are the candidates;
2. greedy NMS among each class's candidates (``NonMaxSuppression`` with one "batch" per
   (image, class) pair): a candidate must score above ``conf_thresh`` and is suppressed by a
   kept box whose IoU with it exceeds ``nms_thresh``;
3. the kept rows of each image, best first, at most ``max_per_image`` of them (all of them,
   ``(C - 1) * top_k`` slots, when ``None``), zero-padded to a fixed length, with a count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["NMS_OUTPUTS", "NmsSettings", "add_nms", "nms_model", "nms_nodes"]

# Output names of the detection step, in graph order.
NMS_OUTPUTS = ("det_boxes", "det_scores", "det_labels", "num_detections")


@dataclass(frozen=True)
class NmsSettings:
    """:func:`ssd.detection.detect`'s settings (background class 0)."""

    top_k: int = 200
    conf_thresh: float = 0.01
    nms_thresh: float = 0.45
    max_per_image: int | None = None

    def __post_init__(self) -> None:
        if self.top_k <= 0:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if not 0.0 <= self.nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {self.nms_thresh}")
        if self.max_per_image is not None and self.max_per_image <= 0:
            raise ValueError(f"max_per_image must be positive or None, got {self.max_per_image}")

    def slots(self, num_classes: int, num_priors: int) -> int:
        """Rows per image of the outputs."""
        every = (num_classes - 1) * min(self.top_k, num_priors)
        return every if self.max_per_image is None else min(self.max_per_image, every)


def _const(name: str, value, dtype=None) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def nms_nodes(num_classes: int, num_priors: int, settings: NmsSettings, *,
              scores: str = "scores", boxes: str = "boxes", prefix: str = "nms/"
              ) -> tuple[list[onnx.NodeProto], list[TensorProto], list[onnx.ValueInfoProto]]:
    """Nodes that read ``scores [N, P, C]`` and ``boxes [N, P, 4]`` and write
    :data:`NMS_OUTPUTS`: ``det_boxes`` float ``[N, K, 4]`` (relative corners),
    ``det_scores`` float ``[N, K]``, ``det_labels`` int64 ``[N, K]`` (0-based foreground
    class, i.e. network class - 1), ``num_detections`` int64 ``[N]``; rows past the count are
    zero. ``K`` is :meth:`NmsSettings.slots`.

    Returns ``(nodes, initializers, outputs)``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    n_fg = num_classes - 1
    k = min(settings.top_k, num_priors)
    slots = settings.slots(num_classes, num_priors)
    p = prefix
    inits = [
        _const(p + "fg_start", [1], np.int64), _const(p + "fg_end", [num_classes], np.int64),
        _const(p + "axis2", [2], np.int64), _const(p + "k", [k], np.int64),
        _const(p + "flat_shape", [0, -1, 1], np.int64),
        _const(p + "batch_boxes_shape", [-1, k, 4], np.int64),
        _const(p + "batch_scores_shape", [-1, 1, k], np.int64),
        _const(p + "rows_shape", [-1, k], np.int64),
        _const(p + "image_shape", [-1, n_fg * k], np.int64),
        _const(p + "max_out", [k], np.int64),
        _const(p + "iou", [settings.nms_thresh], np.float32),
        _const(p + "score", [settings.conf_thresh], np.float32),
        _const(p + "pick", [0, 2], np.int64), _const(p + "zero_i", [0], np.int64),
        _const(p + "one_i", [1], np.int64), _const(p + "axis1", [1], np.int64),
        _const(p + "slots", [slots], np.int64), _const(p + "k_i", k, np.int64),
        _const(p + "dropped", -1.0, np.float32), _const(p + "half", -0.5, np.float32),
        _const(p + "zero_f", 0.0, np.float32), _const(p + "zero_l", 0, np.int64),
        _const(p + "minus1", [-1], np.int64),
    ]
    n = helper.make_node
    nodes = [
        # Candidates: the top k foreground scores of every (image, class).
        n("Slice", [scores, p + "fg_start", p + "fg_end", p + "axis2"], [p + "fg"]),
        n("Transpose", [p + "fg"], [p + "fg_t"], perm=[0, 2, 1]),             # [N, C', P]
        n("TopK", [p + "fg_t", p + "k"], [p + "cand_scores", p + "cand_idx"], axis=-1,
          largest=1, sorted=1),                                                # [N, C', k]
        n("Reshape", [p + "cand_idx", p + "flat_shape"], [p + "cand_idx_flat"]),  # [N, C'k, 1]
        n("GatherND", [boxes, p + "cand_idx_flat"], [p + "cand_boxes"], batch_dims=1),
        # One NMS "batch" per (image, class): NonMaxSuppression compares boxes of one batch.
        n("Reshape", [p + "cand_boxes", p + "batch_boxes_shape"], [p + "nms_boxes"]),
        n("Reshape", [p + "cand_scores", p + "batch_scores_shape"], [p + "nms_scores"]),
        n("NonMaxSuppression", [p + "nms_boxes", p + "nms_scores", p + "max_out", p + "iou",
                                p + "score"], [p + "selected"], center_point_box=0),
        # Kept mask [N * C', k] from the selected (batch, box) pairs.
        n("Gather", [p + "selected", p + "pick"], [p + "sel_rows"], axis=1),    # [M, 2]
        n("Reshape", [p + "cand_scores", p + "rows_shape"], [p + "rows_scores"]),
        n("Shape", [p + "rows_scores"], [p + "rows_dims"]),
        n("ConstantOfShape", [p + "rows_dims"], [p + "mask0"],
          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        n("Shape", [p + "selected"], [p + "sel_dims"]),
        n("Slice", [p + "sel_dims", p + "zero_i", p + "one_i"], [p + "n_sel"]),
        n("ConstantOfShape", [p + "n_sel"], [p + "ones"],
          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
        n("ScatterND", [p + "mask0", p + "sel_rows", p + "ones"], [p + "mask_rows"]),
        n("Reshape", [p + "mask_rows", p + "image_shape"], [p + "mask_f"]),      # [N, C'k]
        n("Cast", [p + "mask_f"], [p + "mask"], to=TensorProto.BOOL),
        n("Reshape", [p + "cand_scores", p + "image_shape"], [p + "img_scores"]),
        n("Where", [p + "mask", p + "img_scores", p + "dropped"], [p + "kept_scores"]),
        # Best `slots` kept rows per image (scores are >= 0, dropped rows -1).
        n("TopK", [p + "kept_scores", p + "slots"], [p + "best", p + "order"], axis=1,
          largest=1, sorted=1),                                                # [N, K]
        n("Greater", [p + "best", p + "half"], [p + "valid"]),
        n("Where", [p + "valid", p + "best", p + "zero_f"], ["det_scores"]),
        n("Div", [p + "order", p + "k_i"], [p + "label"]),
        n("Where", [p + "valid", p + "label", p + "zero_l"], ["det_labels"]),
        n("Unsqueeze", [p + "order", p + "minus1"], [p + "order_idx"]),
        n("GatherND", [p + "cand_boxes", p + "order_idx"], [p + "best_boxes"], batch_dims=1),
        n("Unsqueeze", [p + "valid", p + "minus1"], [p + "valid_col"]),
        n("Where", [p + "valid_col", p + "best_boxes", p + "zero_f"], ["det_boxes"]),
        n("Cast", [p + "valid"], [p + "valid_i"], to=TensorProto.INT64),
        n("ReduceSum", [p + "valid_i", p + "axis1"], ["num_detections"], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, ["batch", slots, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, ["batch", slots]),
        helper.make_tensor_value_info("det_labels", TensorProto.INT64, ["batch", slots]),
        helper.make_tensor_value_info("num_detections", TensorProto.INT64, ["batch"]),
    ]
    return nodes, inits, outputs


def nms_model(num_classes: int, num_priors: int, settings: NmsSettings = NmsSettings(), *,
              opset: int = 18) -> onnx.ModelProto:
    """The detection step on its own: inputs ``scores [N, P, C]`` and ``boxes [N, P, 4]``
    (float32), outputs :data:`NMS_OUTPUTS` (see :func:`nms_nodes`)."""
    nodes, inits, outputs = nms_nodes(num_classes, num_priors, settings)
    inputs = [
        helper.make_tensor_value_info("scores", TensorProto.FLOAT,
                                      ["batch", num_priors, num_classes]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", num_priors, 4]),
    ]
    graph = helper.make_graph(nodes, "ssd_detect", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="ssd")
    onnx.checker.check_model(model)
    return model


def add_nms(model: onnx.ModelProto, num_classes: int, num_priors: int,
            settings: NmsSettings = NmsSettings()) -> onnx.ModelProto:
    """``model`` (with ``scores`` and ``boxes`` outputs) plus the detection step; ``scores``
    and ``boxes`` stay outputs, :data:`NMS_OUTPUTS` follow them. Changes ``model`` in place
    and returns it."""
    names = [o.name for o in model.graph.output]
    if "scores" not in names or "boxes" not in names:
        raise ValueError(f"the model must output 'scores' and 'boxes', it outputs {names}")
    if any(o in names for o in NMS_OUTPUTS):
        raise ValueError("the model already has the detection outputs")
    nodes, inits, outputs = nms_nodes(num_classes, num_priors, settings)
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    model.graph.output.extend(outputs)
    onnx.checker.check_model(model)
    return model
