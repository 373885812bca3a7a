"""``python -m ssd.demo``: draw detections on a camera, a video, or images (see ``--help``).

Exit status: 0 done (also when stopped with q or Ctrl-C: what was processed is written),
2 bad flags, source, output or model.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

PROG = "python -m ssd.demo"

log = logging.getLogger("ssd.demo")


class DemoError(Exception):
    """A user error, printed as ``python -m ssd.demo: error: ...`` (exit status 2)."""


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return v


def _batch_size(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer or 'auto': {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Draw SSD detections (boxes, class names, scores, FPS) on a camera, a "
                    "video, or images, into a window and/or files (ssd.pytorch's live demo).")
    p.add_argument("--source", required=True,
                   help="camera index (0), video file or URL, image file, folder of images, "
                        "or a quoted glob ('photos/*.jpg')")
    p.add_argument("--trained_model", "--trained-model", required=True, metavar="PATH|NAME",
                   help="SSD weights: a .pth/.ckpt file, or a model-zoo name")
    p.add_argument("--config", default=None,
                   help="voc300, voc512, coco300, coco512 (default: the file's own, else voc300)")
    p.add_argument("--classes", default=None, metavar="FILE",
                   help="class-name file, one per line (default: the file's own, else the "
                        "config's dataset classes)")
    p.add_argument("--threshold", type=_threshold, default=0.6,
                   help="draw detections scoring at least this")
    p.add_argument("--output", "-o", default=None,
                   help="video input: an .mp4/.avi/.mkv/.mov file (or a folder for "
                        "<name>.mp4), at the input's frame rate and size; image input: a "
                        "folder receiving one annotated picture per image")
    p.add_argument("--show", action="store_true",
                   help="show the frames in a window (q or Esc quits); implied without "
                        "--output")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch_size", "--batch-size", type=_batch_size, default=None,
                   metavar="N|auto",
                   help="frames per forward pass for files (default auto: timed on the first "
                        "frames, the fastest of 1, 2, 4, 8 is kept); cameras use 1")
    p.add_argument("--no_fps", "--no-fps", action="store_true",
                   help="do not draw the frames/s counter")
    return p


def load_detector(args: argparse.Namespace) -> Any:
    """``ssd.Detector.from_checkpoint`` with user errors turned into :class:`DemoError`."""
    from ..detector import Detector

    try:
        return Detector.from_checkpoint(args.trained_model, config=args.config,
                                        classes=args.classes, device=args.device)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError, OSError) as e:
        raise DemoError(f"--trained_model {args.trained_model}: {e}") from e


def _window(args: argparse.Namespace, images: bool) -> Any:
    from .display import Window, gui_unavailable_reason

    reason = gui_unavailable_reason()
    if reason is None:
        return Window(wait_ms=0 if images else 1)
    if args.output is None:
        raise DemoError(f"cannot show a window: {reason}. Write the result to a file instead "
                        f"with --output (out.mp4 for videos and cameras, a folder for images)")
    print(f"{PROG}: --show: no window ({reason}); writing {args.output} only", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> int:
    from .outputs import OutputError, open_output
    from .runner import run_demo
    from .sources import SourceError, open_source

    source = None
    output = display = None
    try:
        try:
            source = open_source(args.source)
        except SourceError as e:
            raise DemoError(str(e)) from e
        try:
            output = open_output(args.output, source) if args.output is not None else None
        except (OutputError, OSError) as e:
            raise DemoError(str(e)) from e
        if args.show or output is None:
            display = _window(args, source.kind == "images")
        detector = load_detector(args)
        print(f"{PROG}: {detector!r} on {source.kind} {source.name} "
              f"(threshold {args.threshold:g})", file=sys.stderr)
        stats = run_demo(detector, source, threshold=args.threshold,
                         outputs=[output] if output is not None else [], display=display,
                         batch_size=args.batch_size, show_fps=not args.no_fps)
    except DemoError as e:
        if output is not None:
            output.close(ok=False)
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except BaseException:
        if output is not None:
            output.close(ok=False)
        raise
    finally:
        if source is not None:
            source.close()
        if display is not None:
            display.close()
    if output is not None:
        output.close(ok=True)
    _report(stats, source, output)
    return 0


def _report(stats: Any, source: Any, output: Any) -> None:
    if stats.frames == 0:
        print(f"{PROG}: no frame could be read from {source.name}", file=sys.stderr)
        return
    how = {"window": " (stopped in the window)", "interrupt": " (stopped by Ctrl-C)"}
    batch = (f"batch size {stats.batch_size}" if stats.batch_size is not None
             else "too few frames to time batch sizes")
    if stats.batch_sizes:
        batch += " (timed: " + ", ".join(f"{k}: {v:.1f}" for k, v in
                                         sorted(stats.batch_sizes.items())) + " frames/s)"
    frames = f"{stats.frames} frame{'s' if stats.frames != 1 else ''}"
    print(f"{PROG}: {frames} in {stats.seconds:.1f} s{how.get(stats.stopped_by, '')}"
          f": {stats.fps:.2f} frames/s end to end, {stats.detect_fps:.2f} frames/s detection, "
          f"{batch}; {stats.detections} detections")
    skipped = getattr(source, "skipped", [])
    if skipped:
        print(f"{PROG}: skipped {len(skipped)} unreadable image(s)", file=sys.stderr)
    if output is not None:
        print(f"{PROG}: wrote {output.describe()}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger("ssd")
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        return run(args)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
