"""``python -m ssd.plot RUN.jsonl [RUN2.jsonl ...] -o out.png``: training curves of one run, or
several compared (loss, learning rate, images/s, mAP), from train.py's metrics logs.

A RUN may also be a save folder holding one ``*_metrics.jsonl``. Exit status: 0 written,
2 bad arguments or unreadable/empty logs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

PROG = "python -m ssd.plot"


class PlotError(Exception):
    """A user error, printed as ``python -m ssd.plot: error: ...``."""


def resolve_run(spec: str) -> Path:
    """A metrics file, or the one ``*_metrics.jsonl`` in a folder."""
    p = Path(spec).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*_metrics.jsonl"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise PlotError(f"{spec}: {what} *_metrics.jsonl files in this folder; name the "
                            f"file" + (f" ({', '.join(f.name for f in found)})" if found else ""))
        return found[0]
    if not p.is_file():
        raise PlotError(f"{spec}: no such metrics file or folder")
    return p


def _labels(paths: Sequence[Path]) -> list[str]:
    """File stems (minus ``_metrics``), with the folder added where two runs share a stem."""
    stems = [p.name.removesuffix(".jsonl").removesuffix("_metrics") for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{p.parent.name}/{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="metrics log (<save_folder>/ssd300_VOC_metrics.jsonl) or save folder")
    p.add_argument("-o", "--output", required=True, help="PNG file to write")
    p.add_argument("--labels", nargs="+", default=None,
                   help="legend names, one per RUN (default: file names)")
    p.add_argument("--title", default=None, help="figure title")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise PlotError("matplotlib is not installed (pip install matplotlib, or "
                            "'ssd[plots]')") from e
        from .training.curves import draw_curves, read_run, save_figure

        paths = [resolve_run(r) for r in args.runs]
        if args.labels is not None and len(args.labels) != len(paths):
            raise PlotError(f"--labels has {len(args.labels)} names for {len(paths)} runs")
        labels = args.labels or _labels(paths)
        runs = []
        for path, label in zip(paths, labels):
            try:
                run = read_run(path, label)
            except (OSError, UnicodeDecodeError) as e:
                raise PlotError(f"cannot read {path}: {e}") from e
            if not run.series.get("loss"):
                raise PlotError(f"{path}: no training loss records (is it a train.py "
                                f"metrics log?)")
            runs.append(run)
        out = save_figure(draw_curves(runs, args.title), args.output)
    except PlotError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: cannot write {args.output}: {e}", file=sys.stderr)
        return 2
    points = ", ".join(f"{r.label}: {len(r.series['loss'])} points to iteration "
                       f"{r.xs('loss')[-1]}" for r in runs)
    print(f"wrote {out} ({points})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
