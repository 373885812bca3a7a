"""ONNX export of an SSD with the dynamo-based exporter (``torch.onnx.export(dynamo=True)``).

The graph takes ``images`` (float32 ``[N, 3, S, S]``, what :class:`ssd.data.BaseTransform`
plus the RGB reorder gives) and returns ``scores`` ``[N, P, C]`` and ``boxes`` ``[N, P, 4]``
(see :class:`ssd.export.graph.ScoresBoxes`); with ``nms=True`` the detection step follows
(see :mod:`ssd.export.nms_graph`). The model's size, classes, means and detection settings are
written into the file's metadata, where :class:`ssd.OnnxDetector` reads them.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Any, Mapping, Sequence, Union

import onnx
import torch
from torch import nn

from ..config import MEANS
from ..io import atomic_write
from .graph import ScoresBoxes
from .nms_graph import NmsSettings, add_nms

__all__ = ["DEFAULT_OPSET", "add_nms_to_file", "export_onnx", "exportable_copy", "parse_batch",
           "read_metadata"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's lowest
METADATA_PREFIX = "ssd."
_MAX_BATCH = 4096


def parse_batch(batch: int | str | None) -> int | None:
    """``'dynamic'``/``None`` -> ``None`` (dynamic batch axis), else a positive int."""
    if batch is None or str(batch).lower() == "dynamic":
        return None
    try:
        value = int(batch)
    except (TypeError, ValueError):
        raise ValueError(f"batch must be a positive int or 'dynamic', got {batch!r}") from None
    if value < 1:
        raise ValueError(f"batch must be a positive int or 'dynamic', got {batch!r}")
    return value


def exportable_copy(model: nn.Module) -> nn.Module:
    """A float32, contiguous, CPU, eval-mode copy of ``model`` (the caller's is not touched)."""
    from ..weights import unwrap_model

    core = copy.deepcopy(unwrap_model(model))
    core = core.to("cpu", torch.float32).to(memory_format=torch.contiguous_format)
    return core.eval()


def _metadata(core: nn.Module, class_names: Sequence[str] | None,
              mean: Sequence[float]) -> dict[str, Any]:
    names = list(class_names) if class_names is not None else None
    if names is not None and len(names) != core.num_classes - 1:
        raise ValueError(f"the model has {core.num_classes - 1} foreground classes but "
                         f"{len(names)} class names were given")
    return {
        "format": 1,
        "graph": "scores_boxes",
        "size": int(core.size),
        "num_classes": int(core.num_classes),
        "num_priors": int(core.priors.shape[0]),
        "config": str(core.cfg.get("name", "")),
        "variance": [float(v) for v in core.cfg["variance"]],
        "mean": [float(m) for m in mean],
        "class_names": names,
        # torchvision-style input rule {"scale", "mean", "std"} (RGB), None for mean subtraction
        "normalize": core.cfg.get("normalize"),
    }


def check_exportable(cfg: Mapping[str, Any]) -> None:
    """Refuse a config whose post-processing the graph does not reproduce (a config ``detect``
    entry with torchvision's rules): its exported boxes or detections would differ."""
    options = {k: v for k, v in dict(cfg.get("detect") or {}).items()
               if v is not None and v is not False}
    if options:
        raise ValueError(f"config {cfg.get('name', '?')!r} sets detect options {options}; the "
                         "exported graph implements ssd.pytorch's post-processing only, so "
                         "its outputs would not match this model's detect()")


def _finish(proto: onnx.ModelProto, meta: dict[str, Any], settings: NmsSettings | None,
            path: PathLike) -> onnx.ModelProto:
    """Add the detection step (if ``settings``) and the metadata; write ``path`` atomically."""
    meta = dict(meta)
    if settings is not None:
        add_nms(proto, int(meta["num_classes"]), int(meta["num_priors"]), settings)
        meta.update(graph="detections", top_k=settings.top_k,
                    conf_thresh=settings.conf_thresh, nms_thresh=settings.nms_thresh,
                    max_per_image=settings.max_per_image)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)
    with atomic_write(path, "wb") as f:
        f.write(proto.SerializeToString())
    return proto


def _settings(top_k: int, conf_thresh: float, nms_thresh: float,
              max_per_image: int | None) -> NmsSettings:
    return NmsSettings(int(top_k), float(conf_thresh), float(nms_thresh),
                       None if max_per_image is None else int(max_per_image))


def add_nms_to_file(src: PathLike, dst: PathLike, *, top_k: int = 200,
                    conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                    max_per_image: int | None = None) -> onnx.ModelProto:
    """Write ``dst``: the default graph ``src`` (from :func:`export_onnx`) with the detection
    step added, as ``export_onnx(..., nms=True)`` would, without exporting again."""
    if not os.path.isfile(src):
        raise FileNotFoundError(f"ONNX model {os.fspath(src)!r} not found")
    proto = onnx.load(os.fspath(src))
    meta = read_metadata(proto)
    if meta.get("graph") != "scores_boxes":
        raise ValueError(f"{os.fspath(src)} is not a default (scores + boxes) graph written by "
                         "ssd.export")
    return _finish(proto, meta, _settings(top_k, conf_thresh, nms_thresh, max_per_image), dst)


def read_metadata(model: onnx.ModelProto | Mapping[str, str]) -> dict[str, Any]:
    """The ``ssd.*`` metadata of an exported model (an ONNX model or ONNX Runtime's
    ``custom_metadata_map``), decoded, without the prefix."""
    if isinstance(model, onnx.ModelProto):
        model = {p.key: p.value for p in model.metadata_props}
    return {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in model.items()
            if k.startswith(METADATA_PREFIX)}


def export_onnx(model: nn.Module, path: PathLike, *, opset: int = DEFAULT_OPSET,
                nms: bool = False, batch: int | str | None = "dynamic",
                class_names: Sequence[str] | None = None, mean: Sequence[float] = MEANS,
                top_k: int = 200, conf_thresh: float = 0.01, nms_thresh: float = 0.45,
                max_per_image: int | None = None) -> onnx.ModelProto:
    """Export ``model`` (an :class:`ssd.SSD`, either phase, possibly wrapped) to ``path``.

    Args:
        model: the network; a float32 CPU copy is exported, ``model`` is left as it is.
        path: the ``.onnx`` file (written atomically, weights inside the file).
        opset: ONNX opset (>= 18).
        nms: add the detection step (outputs ``det_boxes``, ``det_scores``, ``det_labels``,
            ``num_detections`` after ``scores`` and ``boxes``).
        batch: ``'dynamic'`` (any batch size) or a fixed batch size.
        class_names: foreground names to store in the metadata.
        mean: BGR means of the pre-processing, stored in the metadata.
        top_k, conf_thresh, nms_thresh, max_per_image: the detection step's settings (as in
            :func:`ssd.detection.detect`); only used with ``nms``.

    Returns:
        The ONNX model that was written.
    """
    if int(opset) < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (the dynamo-based exporter's lowest), "
                         f"got {opset}")
    fixed = parse_batch(batch)
    settings = _settings(top_k, conf_thresh, nms_thresh, max_per_image) if nms else None
    core = exportable_copy(model)
    check_exportable(core.cfg)
    metadata = _metadata(core, class_names, mean)
    wrapper = ScoresBoxes(core).eval()
    example = torch.zeros(fixed or 2, 3, core.size, core.size)  # 2: a batch of 1 specialises
    dynamic = None if fixed else {"images": {0: torch.export.Dim("batch", min=1,
                                                                   max=_MAX_BATCH)}}
    with warnings.catch_warnings():
        # The exporter reports its own progress and deprecation notes of torch internals.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(wrapper, (example,), dynamo=True, opset_version=int(opset),
                                    input_names=["images"], output_names=["scores", "boxes"],
                                    dynamic_shapes=dynamic, external_data=False,
                                    verbose=False)
    return _finish(program.model_proto, metadata, settings, path)
