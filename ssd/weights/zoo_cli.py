"""``python -m ssd.weights list`` and ``download NAME``: the zoo on the command line."""

from __future__ import annotations

import argparse
from typing import Any

from . import zoo
from .download import cache_dir

__all__ = ["add_zoo_commands"]


def _list(args: argparse.Namespace) -> int:
    rows = [("name", "kind", "size", "cached", "source", "licence", "metric")]
    for e in zoo.ZOO.values():
        rows.append((e.name, e.kind, f"{e.size_mib:.0f} MiB",
                     "yes" if zoo.cached_path(e.name) else "no", e.source, e.licence, e.metric))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"\ncache: {cache_dir()} (set $SSD_HOME to move it)")
    if args.verbose:
        for e in zoo.ZOO.values():
            print(f"\n{e.name}: {', '.join(e.urls)}\n  sha256: {e.sha256 or 'not published'}"
                  f"\n  metric source: {e.metric_source}")
    return 0


def _download(args: argparse.Namespace) -> int:
    for name in args.names:
        zoo.entry(name)  # unknown names fail before anything is downloaded
    for name in args.names:
        path = zoo.fetch(name, progress=not args.no_progress)
        print(f"{name}: {path}")
    return 0


def add_zoo_commands(sub: Any) -> None:
    """Add ``list`` and ``download`` to the ``python -m ssd.weights`` subparsers."""
    ls = sub.add_parser("list", help="the pretrained models: sources, metrics, cached or not")
    ls.add_argument("-v", "--verbose", action="store_true", help="also URLs and checksums")
    ls.set_defaults(handler=_list)
    dl = sub.add_parser("download", help="download (and convert) pretrained models into the "
                                         "cache",
                        description="Download zoo weights into $SSD_HOME (default: torch hub's "
                                    "checkpoints folder), verify and convert them. Files already "
                                    "there are reused without network access.")
    dl.add_argument("names", nargs="+", metavar="NAME", help="names from `list`")
    dl.add_argument("--no_progress", action="store_true", help="no progress bar")
    dl.set_defaults(handler=_download)
