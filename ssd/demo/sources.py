"""Where frames come from: a camera index, a video file or stream, or image files.

:func:`open_source` turns ``--source`` into a :class:`FrameSource`; every problem (no such
camera, unreadable video, folder without images) is a :class:`SourceError` naming it.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Frame rate written when a camera or video does not report a usable one.
FALLBACK_FPS = 30.0


class SourceError(ValueError):
    """A ``--source`` that cannot be read; the message names it and says why."""


@dataclass
class Frame:
    """One input picture: ``bgr`` uint8 ``[H, W, 3]``, its position and (images) its file."""

    bgr: np.ndarray
    index: int
    path: Path | None = None


class FrameSource:
    """Frames to annotate. ``live`` sources (cameras, streams) are processed one at a time."""

    kind = "frames"
    live = False
    name = ""
    fps: float | None = None  # videos and cameras
    count: int | None = None  # frames or images, when known

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    # OpenCV prints its own warnings when a camera or file does not open; ours names the source.
    try:
        from cv2.utils import logging as cv_logging

        old = cv_logging.getLogLevel()
        cv_logging.setLogLevel(cv_logging.LOG_LEVEL_SILENT)
    except (ImportError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        cv_logging.setLogLevel(old)


class VideoSource(FrameSource):
    """A video file, a stream URL or a camera, read with ``cv2.VideoCapture``."""

    kind = "video"

    def __init__(self, target: str | int, name: str, live: bool = False) -> None:
        self.name, self.live = name, live
        self.kind = "camera" if isinstance(target, int) else "video"
        with _opencv_quiet():
            self._cap = cv2.VideoCapture(target)
            opened = self._cap.isOpened()
            ok, first = self._cap.read() if opened else (False, None)
        if not opened or not ok or first is None:
            self._cap.release()
            if isinstance(target, int):
                raise SourceError(f"cannot open camera {target} (no such device, no "
                                  f"permission, or another program is using it)")
            raise SourceError(f"cannot read video {name}: OpenCV could not open or decode it "
                              f"(not a video, damaged, or a codec this OpenCV build lacks)")
        self._first: np.ndarray | None = first
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            log.warning("%s reports no usable frame rate (%s): writing %g fps", name, fps,
                        FALLBACK_FPS)
            fps = FALLBACK_FPS
        self.fps = fps
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = count if count > 0 and not live else None
        self.frame_size = (int(first.shape[1]), int(first.shape[0]))  # width, height

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        if self._first is not None:
            first, self._first = self._first, None
            yield Frame(first, index)
            index += 1
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield Frame(frame, index)
            index += 1

    def close(self) -> None:
        self._cap.release()


class ImageSource(FrameSource):
    """Image files, read in order; an unreadable one is skipped with a warning."""

    kind = "images"

    def __init__(self, paths: Sequence[Path], name: str) -> None:
        self.paths, self.name = list(paths), name
        self.count = len(self.paths)
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        from ..data.image_io import read_image

        for index, path in enumerate(self.paths):
            try:
                bgr = read_image(path)
            except (OSError, ValueError) as e:
                log.warning("skipping %s: %s", path, e)
                self.skipped.append(os.fspath(path))
                continue
            yield Frame(bgr, index, path)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def open_source(spec: str) -> FrameSource:
    """``--source``: a camera index (``0``), a video file or URL, an image, a folder of images
    or a glob pattern (``'photos/*.jpg'``, quoted so the shell leaves it alone)."""
    spec = spec.strip()
    if not spec:
        raise SourceError("--source is empty (give a camera index, a video, a folder or a glob)")
    path = Path(spec).expanduser()
    if spec.isdigit() and not path.exists():
        return VideoSource(int(spec), f"camera {spec}", live=True)
    if "://" in spec:
        return VideoSource(spec, spec, live=True)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
        if not images:
            raise SourceError(f"folder {spec} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageSource(images, spec)
    if path.is_file():
        if is_image_file(path):
            return ImageSource([path], spec)
        return VideoSource(os.fspath(path), spec)
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec)))
        files = [p for p in matches if p.is_file()]
        images = [p for p in files if is_image_file(p)]
        if not images:
            raise SourceError(f"no image matches {spec}" + (
                f" ({len(files)} other file(s) do; pass a video file directly)" if files else ""))
        return ImageSource(images, spec)
    raise SourceError(f"no such camera, file or folder: {spec}")
