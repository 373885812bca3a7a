"""The demo loop: frames -> detector (batched where that is faster) -> drawn -> output/window.

:func:`run_demo` takes any :class:`~ssd.detector.Detector`-like object (``predict(list of RGB
arrays, threshold) -> list of Detections``), so it is tested with real checkpoints and small
fake displays alike.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from .sources import Frame, FrameSource

#: Batch sizes tried, in order, when the batch size is chosen by measurement.
TRIAL_SIZES = (1, 2, 4, 8)


class BatchSizer:
    """Picks the batch size by timing: a warm-up batch of 1, then one batch at each trial size
    up to ``max_size``; the fastest (frames/s) is kept for the rest of the run. The trial
    frames are real frames: nothing is processed twice.

    ``fixed=True`` always uses ``max_size``.
    """

    def __init__(self, max_size: int, fixed: bool = False) -> None:
        self.max_size, self.fixed = max(1, int(max_size)), fixed
        trials = [s for s in TRIAL_SIZES if s <= self.max_size]
        self._plan = [] if fixed or len(trials) < 2 else [1, *trials]  # first one: warm-up
        self._done = 0
        self.measured: dict[int, float] = {}
        self.chosen: int | None = self.max_size if fixed or len(trials) < 2 else None

    def next_size(self) -> int:
        if self.chosen is not None:
            return self.chosen
        return self._plan[self._done]

    def record(self, size: int, frames: int, seconds: float) -> None:
        if self.chosen is not None:
            return
        if self._done > 0 and frames == size and seconds > 0:  # the warm-up is not counted
            self.measured[size] = frames / seconds
        self._done += 1
        if self._done >= len(self._plan):
            self.chosen = max(self.measured, key=self.measured.get) if self.measured else 1


@dataclass
class DemoStats:
    frames: int = 0
    seconds: float = 0.0  # end to end: reading, detecting, drawing, writing
    detect_seconds: float = 0.0
    detections: int = 0
    stopped_by: str | None = None  # "window" or "interrupt" when the user stopped it
    batch_sizes: dict[int, float] = field(default_factory=dict)  # timed: frames/s per size
    batch_size: int | None = None  # kept after timing (None: the run ended during timing)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def detect_fps(self) -> float:
        return self.frames / self.detect_seconds if self.detect_seconds > 0 else 0.0


def draw_fps(bgr: np.ndarray, fps: float) -> np.ndarray:
    """Write ``"<fps> FPS"`` in the top-left corner (white on a dark box), in place."""
    h, w = bgr.shape[:2]
    scale = max(0.4, min(h, w) / 600)
    thick = max(1, round(scale * 1.5))
    text = f"{fps:.1f} FPS"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(bgr, (0, 0), (tw + 8, th + base + 8), (32, 32, 32), -1)
    cv2.putText(bgr, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                thick, cv2.LINE_AA)
    return bgr


def annotate(frame_bgr: np.ndarray, result: Any, fps: float | None) -> np.ndarray:
    """Boxes, class names and scores (:func:`ssd.visualize.draw_detections`) and the FPS."""
    from ..visualize import draw_detections

    rgb = draw_detections(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), result)
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    return draw_fps(out, fps) if fps is not None else out


def _batches(frames: Iterator[Frame], sizer: BatchSizer) -> Iterator[list[Frame]]:
    while True:
        batch = list(itertools.islice(frames, sizer.next_size()))
        if not batch:
            return
        yield batch


def run_demo(detector: Any, source: FrameSource, *, threshold: float = 0.6,
             outputs: Sequence[Any] = (), display: Any = None, batch_size: int | None = None,
             progress: bool = True, show_fps: bool = True) -> DemoStats:
    """Annotate every frame of ``source``.

    Args:
        detector: ``detector.predict(list of RGB arrays, threshold=...)`` -> list of results.
        source: the frames; live sources (cameras) go one frame at a time.
        threshold: draw detections scoring at least this.
        outputs: :class:`~ssd.demo.outputs.FrameOutput` objects receiving each drawn frame.
        display: an object with ``show(bgr) -> bool`` (False: the user quit) and ``close()``.
        batch_size: frames per forward pass; ``None`` chooses by timing (see
            :class:`BatchSizer`).
        progress: a tqdm bar (on a terminal).
        show_fps: draw the running frames/s on each frame.

    Returns:
        Counts and timings. Ctrl-C stops the run early (``stopped_by='interrupt'``) with
        everything processed so far written.
    """
    from tqdm.auto import tqdm

    sizer = BatchSizer(1 if source.live else (batch_size or max(TRIAL_SIZES)),
                       fixed=source.live or batch_size is not None)
    stats = DemoStats()
    bar = tqdm(total=source.count, unit="frame" if source.kind != "images" else "image",
               disable=None if progress else True, desc=source.kind, dynamic_ncols=True)
    smoothed: float | None = None
    start = time.perf_counter()
    mark = start
    try:
        for batch in _batches(iter(source), sizer):
            t0 = time.perf_counter()
            results = detector.predict([cv2.cvtColor(f.bgr, cv2.COLOR_BGR2RGB) for f in batch],
                                       threshold=threshold)
            t1 = time.perf_counter()
            sizer.record(sizer.next_size(), len(batch), t1 - t0)
            stats.detect_seconds += t1 - t0
            rate = len(batch) / max(t1 - mark, 1e-9)  # includes reading the batch
            smoothed = rate if smoothed is None else 0.7 * smoothed + 0.3 * rate
            for frame, result in zip(batch, results):
                drawn = annotate(frame.bgr, result, smoothed if show_fps else None)
                for out in outputs:
                    out.write(drawn, frame.path)
                stats.frames += 1
                stats.detections += len(result)
                bar.update(1)
                if display is not None and not display.show(drawn):
                    stats.stopped_by = "window"
                    return stats
            mark = time.perf_counter()
    except KeyboardInterrupt:
        stats.stopped_by = "interrupt"
    finally:
        stats.seconds = time.perf_counter() - start
        stats.batch_sizes = dict(sizer.measured)
        stats.batch_size = sizer.chosen
        bar.close()
    return stats
