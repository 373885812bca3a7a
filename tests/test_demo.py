"""python -m ssd.demo on real (hand-set) checkpoints: videos, image folders, errors, quitting.

The model (tests/viz_helpers.py) detects one "dog 0.90" box at (0.25, 0.3)-(0.75, 0.8) of
every image, so the tests know where the drawn box must be.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from viz_helpers import save_controlled_ssd

from ssd.demo import cli, display
from ssd.demo.outputs import VideoOutput
from ssd.demo.runner import BatchSizer, run_demo
from ssd.demo.sources import open_source

SAMPLES = Path(__file__).resolve().parents[1] / "data/samples/voc_mini/VOCdevkit/VOC2007/JPEGImages"
BOX = (0.25, 0.3, 0.75, 0.8)
W, H, FPS, N = 160, 120, 12.5, 3


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_controlled_ssd(tmp_path_factory.mktemp("model") / "dog.pth", box=BOX)


@pytest.fixture(scope="module")
def detector(ckpt):
    from ssd.detector import Detector

    return Detector.from_checkpoint(ckpt, device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (W, H))
    for image in sorted(SAMPLES.glob("*.jpg"))[:N]:
        writer.write(cv2.resize(cv2.imread(str(image)), (W, H)))
    writer.release()
    return path


def _frames(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return frames, fps


def _box_px(w: int, h: int) -> tuple[int, int, int, int]:
    return (round(BOX[0] * w), round(BOX[1] * h), round(BOX[2] * w), round(BOX[3] * h))


def _check_box_drawn(before: np.ndarray, after: np.ndarray, tol: float = 14.0) -> None:
    """The box's left and right edges are drawn in the class colour; the bottom-right corner,
    away from the box, its label and the FPS counter, is the input's."""
    h, w = before.shape[:2]
    x1, y1, x2, y2 = _box_px(w, h)
    rows = slice(y1 + (y2 - y1) // 4, y2 - (y2 - y1) // 4)
    for x in (x1, x2):
        edge = after[rows, x].astype(np.float64)
        b, g, r = edge.mean(0)
        assert min(b, r) > g + 50, (x, edge.mean(0))  # magenta-ish: VOC "dog"'s colour
        assert np.abs(edge - before[rows, x]).mean() > 40
    corner = (slice(y2 + 6, h), slice(x2 + 6, w))
    assert np.abs(after[corner].astype(np.float64) - before[corner]).mean() < tol


def test_video_keeps_frame_count_size_and_rate_with_boxes(ckpt, video, tmp_path, capsys):
    out = tmp_path / "out" / "annotated.mp4"
    code = cli.main(["--source", str(video), "--trained_model", str(ckpt), "--output",
                     str(out), "--device", "cpu", "--threshold", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    before, fps_in = _frames(video)
    after, fps_out = _frames(out)
    assert len(after) == len(before) == N
    assert fps_out == pytest.approx(fps_in) == pytest.approx(FPS)
    assert after[0].shape == before[0].shape == (H, W, 3)
    for b, a in zip(before, after):
        _check_box_drawn(b, a)
    assert f"{N} frames in" in captured.out and "frames/s" in captured.out
    assert f"wrote {out} ({N} frames, {W}x{H}, {FPS:g} fps)" in captured.out
    assert [p.name for p in out.parent.iterdir()] == ["annotated.mp4"]  # no temp file left


def test_threshold_above_the_score_draws_no_box(detector, video, tmp_path):
    source = open_source(str(video))
    out = VideoOutput(tmp_path / "none.avi", source.fps, source.frame_size)
    stats = run_demo(detector, source, threshold=0.95, outputs=[out], batch_size=N,
                     progress=False, show_fps=False)
    out.close()
    source.close()
    assert stats.frames == N and stats.detections == 0 and stats.batch_size == N
    (before, _), (after, _) = _frames(video), _frames(out.path)
    assert len(after) == N
    for b, a in zip(before, after):  # only re-encoding noise: no box, label or counter
        assert np.abs(a.astype(np.float64) - b).mean() < 6


def test_image_folder_gives_one_picture_per_image(ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    src = tmp_path / "photos"
    src.mkdir()
    names = [p.name for p in sorted(SAMPLES.glob("*.jpg"))[:2]]
    for name in names:
        shutil.copy(SAMPLES / name, src / name)
    (src / "notes.txt").write_text("not an image")
    (src / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "annotated"
    code = cli.main(["--source", str(src), "--trained_model", str(ckpt), "--output", str(out),
                     "--device", "cpu", "--show"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "--show: no window (" in captured.err  # said clearly, and the files are written
    assert f"skipping {src / 'zz_broken.jpg'}: cannot decode image" in captured.err
    assert "skipped 1 unreadable image(s)" in captured.err
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        before, after = cv2.imread(str(src / name)), cv2.imread(str(out / name))
        assert after.shape == before.shape
        _check_box_drawn(before, after)
    assert "2 frames in" in captured.out and "2 detections" in captured.out


def test_quitting_the_window_keeps_the_frames_done(detector, video, tmp_path):
    class Keys:
        """A window where the user presses q on the second frame."""

        def __init__(self) -> None:
            self.shown: list[np.ndarray] = []

        def show(self, bgr: np.ndarray) -> bool:
            self.shown.append(bgr.copy())
            return len(self.shown) < 2

        def close(self) -> None:
            pass

    source = open_source(str(video))
    out = VideoOutput(tmp_path / "q.avi", source.fps, source.frame_size)
    keys = Keys()
    stats = run_demo(detector, source, outputs=[out],
                     display=keys, batch_size=1, progress=False)
    out.close()
    source.close()
    assert stats.stopped_by == "window" and stats.frames == 2 and stats.detections == 2
    assert len(_frames(out.path)[0]) == 2 and len(keys.shown) == 2


@pytest.mark.parametrize("case", ["camera", "bad_video", "empty_folder", "no_glob_match",
                                  "missing", "overwrite_input", "no_display", "video_suffix",
                                  "missing_model"])
def test_clear_errors(case, video, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    folder = tmp_path / "imgs"
    folder.mkdir()
    image = SAMPLES / sorted(p.name for p in SAMPLES.glob("*.jpg"))[0]
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    model = ["--trained_model", str(tmp_path / "model.pth")]
    argv, expected = {
        "camera": (["--source", "7", "--output", str(tmp_path / "o.mp4")],
                   "cannot open camera 7"),
        "bad_video": (["--source", str(bad), "--output", str(tmp_path / "o.mp4")],
                      f"cannot read video {bad}"),
        "empty_folder": (["--source", str(folder), "--output", str(tmp_path / "o")],
                         f"folder {folder} holds no images"),
        "no_glob_match": (["--source", str(folder / "*.jpg"), "--output", str(tmp_path)],
                          f"no image matches {folder / '*.jpg'}"),
        "missing": (["--source", str(tmp_path / "nope.mp4")],
                    f"no such camera, file or folder: {tmp_path / 'nope.mp4'}"),
        "overwrite_input": (["--source", str(SAMPLES), "--output", str(SAMPLES)],
                            f"--output {SAMPLES} would overwrite the input image"),
        "no_display": (["--source", str(image)], "cannot show a window: "),
        "video_suffix": (["--source", str(video), "--output", str(tmp_path / "o.xyz")],
                         f"--output {tmp_path / 'o.xyz'}: unknown video type .xyz"),
        "missing_model": (["--source", str(image), "--output", str(tmp_path / "o")],
                          f"--trained_model {tmp_path / 'model.pth'}"),
    }[case]
    assert cli.main([*argv, *model, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"python -m ssd.demo: error: {expected}" in err, err
    if case == "overwrite_input":
        assert len(list(SAMPLES.glob("*.jpg"))) == 100  # nothing written there
    assert not list(tmp_path.glob("**/.*.tmp*"))  # no temporary file left behind


def test_gui_reason_matches_the_opencv_build(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":0")
    reason = display.gui_unavailable_reason()
    if display.opencv_gui_backend().upper() == "NONE":
        assert reason is not None and "opencv-python-headless" in reason
    else:
        assert reason is None
    monkeypatch.setattr(display, "opencv_gui_backend", lambda: "GTK3")
    monkeypatch.delenv("DISPLAY")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(display.sys, "platform", "linux")
    assert "no display here" in display.gui_unavailable_reason()


def test_batch_sizer_keeps_the_fastest_measured_size():
    sizer = BatchSizer(4)
    speeds = {1: 10.0, 2: 25.0, 4: 18.0}  # frames/s the "device" gives per batch size
    sizes = []
    for _ in range(6):
        size = sizer.next_size()
        sizes.append(size)
        sizer.record(size, size, size / speeds[size])
    assert sizes == [1, 1, 2, 4, 2, 2]  # warm-up, trials, then the fastest
    assert sizer.measured == pytest.approx({1: 10.0, 2: 25.0, 4: 18.0})
    fixed = BatchSizer(3, fixed=True)
    assert [fixed.next_size() for _ in range(3)] == [3, 3, 3]
    partial = BatchSizer(2)
    for size, frames in ((1, 1), (1, 1), (2, 1)):  # the source ran out mid-trial
        partial.record(size, frames, 0.1)
    assert partial.chosen == 1 and 2 not in partial.measured
