"""Deployment: ONNX graphs (:func:`export_onnx`), ``torch.export`` programs
(:func:`export_program`) and the CLI ``python -m ssd.export``.

Contract of the default ONNX graph: input ``images`` float32 ``[N, 3, S, S]`` (BGR image
resized to ``S x S`` with cv2 bilinear, minus the BGR means ``(104, 117, 123)``, channels in
RGB order); outputs ``scores`` ``[N, P, C]`` (softmax, class 0 background) and ``boxes``
``[N, P, 4]`` (``x1, y1, x2, y2`` relative to the image). See ``README.md`` ("Deploy").
"""

from __future__ import annotations

__all__ = ["NMS_OUTPUTS", "NmsSettings", "RawOutputs", "ScoresBoxes", "add_nms", "add_nms_to_file",
           "export_onnx", "export_program", "load_program", "nms_model", "read_metadata"]

_WHERE = {
    "NMS_OUTPUTS": "nms_graph", "NmsSettings": "nms_graph", "add_nms": "nms_graph",
    "nms_model": "nms_graph", "RawOutputs": "graph", "ScoresBoxes": "graph",
    "export_onnx": "onnx_export", "read_metadata": "onnx_export",
    "add_nms_to_file": "onnx_export",
    "export_program": "torch_export", "load_program": "torch_export",
}


def __getattr__(name: str):
    # Lazy: `python -m ssd.export` would otherwise warn about a module imported twice, and
    # torch/onnx load only when an exporter is used.
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
