"""Where annotated frames go: a video file, or one picture per input image in a folder.

Both write atomically: a video is written to a temporary file beside the target and renamed
when it is complete (or when the run is stopped, with the frames done so far); each picture
is encoded in memory and renamed into place. An output that would replace an input is refused.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..io import atomic_write
from .sources import FrameSource

#: Video container suffix -> FourCC of a codec opencv-python's FFmpeg build writes.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class OutputError(ValueError):
    """An ``--output`` that cannot be written or does not fit the input."""


class FrameOutput:
    """Receives annotated BGR frames; :meth:`close` finishes (``ok=False``: discard)."""

    path: Path
    written = 0

    def write(self, bgr: np.ndarray, source_path: Path | None = None) -> None:
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        pass

    def describe(self) -> str:
        return os.fspath(self.path)


class VideoOutput(FrameOutput):
    """An annotated video at ``fps`` and ``size`` (width, height) (the input's)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        suffix = path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise OutputError(f"--output {path}: unknown video type {suffix or '(none)'} "
                              f"(use {', '.join(VIDEO_CODECS)})")
        self.path, self.fps, self.size = path, float(fps), (int(size[0]), int(size[1]))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}",
                                   dir=path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*VIDEO_CODECS[suffix]),
                                       self.fps, self.size)
        if not self._writer.isOpened():
            self._writer.release()
            self._tmp.unlink(missing_ok=True)
            raise OutputError(f"--output {path}: OpenCV cannot write {suffix} videos here "
                              f"(codec {VIDEO_CODECS[suffix]}); try .avi")

    def write(self, bgr: np.ndarray, source_path: Path | None = None) -> None:
        if (bgr.shape[1], bgr.shape[0]) != self.size:  # a stream that changed size mid-way
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(bgr))
        self.written += 1

    def close(self, ok: bool = True) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if ok and self.written:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def describe(self) -> str:
        return (f"{self.path} ({self.written} frames, {self.size[0]}x{self.size[1]}, "
                f"{self.fps:g} fps)")


class ImageFolderOutput(FrameOutput):
    """One annotated picture per input image in ``folder``, under the input's file name."""

    def __init__(self, folder: Path, inputs: Sequence[Path]) -> None:
        if folder.suffix.lower() in VIDEO_CODECS:
            raise OutputError(f"--output {folder}: image input gives one picture per image; "
                              f"--output must be a folder")
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"--output {folder} exists and is not a folder")
        self.path = folder
        self._names = self._plan(folder, inputs)
        for src, dst in self._names.items():
            if dst.exists() and os.path.samefile(dst, src):
                raise OutputError(f"--output {folder} would overwrite the input image {src}; "
                                  f"choose another folder")

    @staticmethod
    def _plan(folder: Path, inputs: Sequence[Path]) -> dict[Path, Path]:
        """Each input's output file: same name; ``_2``, ``_3`` ... for repeated names."""
        taken: set[str] = set()
        out = {}
        for src in inputs:
            suffix = src.suffix if cv2.haveImageWriter(f"x{src.suffix}") else ".jpg"
            name, k = f"{src.stem}{suffix}", 1
            while name.lower() in taken:
                k += 1
                name = f"{src.stem}_{k}{suffix}"
            taken.add(name.lower())
            out[src] = folder / name
        return out

    def write(self, bgr: np.ndarray, source_path: Path | None = None) -> None:
        if source_path is None:
            raise ValueError("image output needs each frame's source file")
        dst = self._names[source_path]
        ok, data = cv2.imencode(dst.suffix, bgr)
        if not ok:
            raise OutputError(f"cannot encode {dst}")
        with atomic_write(dst, "wb") as f:
            f.write(data.tobytes())
        self.written += 1

    def describe(self) -> str:
        return f"{self.path}/ ({self.written} picture{'s' if self.written != 1 else ''})"


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return a.exists() and b.exists() and os.path.samefile(a, b)
    return False


def open_output(spec: str, source: FrameSource) -> FrameOutput:
    """``--output`` for ``source``: a folder for images; a video file (or a folder to put
    ``<input name>.mp4`` in) for videos and cameras."""
    from .sources import ImageSource, VideoSource

    path = Path(spec).expanduser()
    if isinstance(source, ImageSource):
        return ImageFolderOutput(path, source.paths)
    assert isinstance(source, VideoSource)
    if path.is_dir() or (not path.suffix and not path.exists()):
        stem = Path(source.name).stem if source.kind == "video" else source.name.replace(" ", "")
        path = path / f"{stem or 'demo'}.mp4"
    if source.kind == "video" and _same_file(path, Path(source.name).expanduser()):
        raise OutputError(f"--output {spec} is the input video; choose another file")
    return VideoOutput(path, source.fps or 30.0, source.frame_size)
