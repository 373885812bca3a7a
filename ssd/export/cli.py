"""``python -m ssd.export --trained_model PATH|NAME --output model.onnx [...]``.

Writes an ONNX graph (``.onnx``; with ``--nms`` the detection step is inside) or, for an
output ending in ``.pt2``, a ``torch.export`` program of the raw network.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["export_parser", "main"]


def export_parser() -> argparse.ArgumentParser:
    from .onnx_export import DEFAULT_OPSET

    p = argparse.ArgumentParser(
        prog="python -m ssd.export",
        description="Export a trained SSD to ONNX (scores + decoded boxes, optionally with "
                    "NMS inside) or to a torch.export .pt2 program.")
    p.add_argument("--trained_model", required=True,
                   help="checkpoint file (or a model-zoo name)")
    p.add_argument("--config", default=None,
                   help="voc300, voc512, coco300, coco512 (default: the file's own, else "
                        "voc300)")
    p.add_argument("--classes", default=None,
                   help="class-list file (one name per line) or comma-separated names "
                        "(default: the file's own, else the config's dataset classes)")
    p.add_argument("--output", required=True,
                   help="model.onnx, or a .pt2 file for torch.export")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help="ONNX opset, >= 18 (default: %(default)s)")
    p.add_argument("--nms", action="store_true",
                   help="put the detection step (per-class top-k, NMS) in the ONNX graph")
    p.add_argument("--batch", default="dynamic",
                   help="batch size: 'dynamic' (default) or a fixed number")
    p.add_argument("--top_k", type=int, default=200,
                   help="--nms: candidates and detections per class (default 200)")
    p.add_argument("--conf_thresh", type=float, default=0.01,
                   help="--nms: minimum (exclusive) score of a candidate (default 0.01)")
    p.add_argument("--nms_thresh", type=float, default=0.45,
                   help="--nms: NMS IoU threshold (default 0.45)")
    p.add_argument("--max_per_image", type=int, default=None,
                   help="--nms: keep only this many best detections per image (default: all, "
                        "(classes - 1) * top_k slots)")
    return p


def _classes(spec: str | None):
    from ..evaluation.cli import parse_classes

    return parse_classes(spec)


def _run(args: argparse.Namespace) -> int:
    import os

    from ..detector import Detector

    detector = Detector.from_checkpoint(args.trained_model, config=args.config,
                                        classes=_classes(args.classes), device="cpu")
    if os.fspath(args.output).lower().endswith(".pt2"):
        if args.nms:
            raise ValueError("--nms applies to ONNX outputs; a .pt2 program holds the raw "
                             "network (loc, conf)")
        from .torch_export import export_program

        export_program(detector.model, args.output, batch=args.batch)
        print(f"torch.export program of SSD{detector.size} written to {args.output}")
        return 0
    from .onnx_export import export_onnx

    export_onnx(detector.model, args.output, opset=args.opset, nms=args.nms, batch=args.batch,
                class_names=detector.class_names, mean=detector.mean, top_k=args.top_k,
                conf_thresh=args.conf_thresh, nms_thresh=args.nms_thresh,
                max_per_image=args.max_per_image)
    kind = "with NMS" if args.nms else "scores + boxes"
    print(f"ONNX graph ({kind}, opset {args.opset}, batch {args.batch}) of SSD{detector.size} "
          f"with {len(detector.class_names)} classes written to {args.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Returns the exit status; user errors print one line and give 2."""
    from ..evaluation.cli import _errors

    args = export_parser().parse_args(argv)
    try:
        return _run(args)
    except _errors() as e:
        print(f"python -m ssd.export: error: {e}", file=sys.stderr)
        return 2
