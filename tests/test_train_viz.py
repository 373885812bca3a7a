"""Training pictures: <prefix>_curves.png, python -m ssd.plot, train.py --tensorboard."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from viz_helpers import controlled_ssd

from ssd import plot
from ssd.training import curves, main
from ssd.training.curves import CurvesWriter, draw_curves, run_series
from ssd.training.metrics import MetricsLog, read_metrics
from ssd.training.tensorboard_logger import (
    TensorBoardLogger,
    ValidationImages,
    default_log_dir,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit" / "VOC2007"


def _train(it: int, loss_l: float, loss_c: float, lr: float = 1e-3, ips: float = 2.0) -> dict:
    return {"type": "train", "iter": it, "epoch": 0, "lr": lr, "img_per_s": ips,
            "loss": loss_l + loss_c, "loss_l": loss_l, "loss_c": loss_c, "grad_norm": 1.0}


def _write_log(path: Path, records: list[dict]) -> Path:
    with MetricsLog(path) as log:
        for rec in records:
            log.write(rec)
    return path


RUN_A = [{"type": "start", "iter": 0},
         _train(1, 3.0, 10.0, lr=1e-4), _train(2, 2.5, 8.0, lr=5e-4), _train(3, 2.0, 7.0),
         {"type": "eval", "iter": 3, "mAP": 0.125, "ap": {"dog": 0.25, "cat": float("nan")}},
         _train(4, 1.5, 6.0), {"type": "eval", "iter": 4, "mAP": 0.25}]
RUN_B = [{"type": "start", "iter": 0}, _train(2, 4.0, 12.0), _train(4, 3.0, 9.0)]


# ----------------------------------------------------------------------------- series, figure

def test_run_series_follows_resumes_and_skips_non_finite():
    recs = [{"type": "start", "iter": 0}, _train(1, 3.0, 9.0), _train(2, 2.0, 8.0),
            _train(3, 9.0, 9.0),  # the abandoned attempt went on to iteration 3
            {"type": "eval", "iter": 3, "mAP": 0.5},
            {"type": "start", "iter": 2},  # ... and was resumed from the checkpoint at 2
            {**_train(3, 1.0, 7.0), "loss_l": "nan"},  # NaN is logged as a string
            {"type": "eval", "iter": 3, "mAP": "nan"}, {"type": "epoch", "iter": 3, "loss": 1}]
    run = run_series(recs, "r")
    assert run.series["loss"] == [(1, 12.0), (2, 10.0), (3, 8.0)]
    assert run.series["loss_l"] == [(1, 3.0), (2, 2.0)]
    assert run.series["loss_c"] == [(1, 9.0), (2, 8.0), (3, 7.0)]
    assert "mAP" not in run.series  # the abandoned 0.5 is gone and NaN is no point


def test_curves_figure_draws_the_logged_values():
    fig = draw_curves([run_series(RUN_A, "a")], title="ssd300_VOC")
    axes = fig.axes
    assert [ax.get_ylabel() for ax in axes] == ["loss", "learning rate", "images/s", "mAP"]
    loss = axes[0]
    assert [ln.get_label() for ln in loss.get_lines()] == ["total", "loc", "conf"]
    assert [ln.get_linestyle() for ln in loss.get_lines()] == ["-", "--", ":"]
    total, loc, conf = (ln.get_ydata() for ln in loss.get_lines())
    np.testing.assert_allclose(total, [13.0, 10.5, 9.0, 7.5])
    np.testing.assert_allclose(loc, [3.0, 2.5, 2.0, 1.5])
    np.testing.assert_allclose(conf, [10.0, 8.0, 7.0, 6.0])
    np.testing.assert_array_equal(loss.get_lines()[0].get_xdata(), [1, 2, 3, 4])
    assert axes[1].get_yscale() == "log"
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), [1e-4, 5e-4, 1e-3, 1e-3])
    (m,) = axes[3].get_lines()
    np.testing.assert_array_equal(m.get_xdata(), [3, 4])
    np.testing.assert_allclose(m.get_ydata(), [0.125, 0.25])
    assert axes[3].get_ylim()[0] == 0.0
    assert axes[-1].get_xlabel() == "iteration" and fig._suptitle.get_text() == "ssd300_VOC"


def test_comparing_runs_one_colour_each():
    fig = draw_curves([run_series(RUN_A, "a"), run_series(RUN_B, "b")])
    loss = fig.axes[0]
    labels = [ln.get_label() for ln in loss.get_lines()]
    assert labels == ["a: total", "a: loc", "a: conf", "b: total", "b: loc", "b: conf"]
    colors = {ln.get_label().split(":")[0]: ln.get_color() for ln in loss.get_lines()}
    assert colors["a"] != colors["b"]
    assert len(fig.axes[3].get_lines()) == 1  # only run a was evaluated
    np.testing.assert_allclose(fig.axes[2].get_lines()[1].get_ydata(), [2.0, 2.0])
    with pytest.raises(ValueError, match="no training loss"):
        draw_curves([run_series([{"type": "start", "iter": 0}], "empty")])


def test_plot_cli_writes_a_png_and_names_bad_input(tmp_path, capsys):
    a = _write_log(tmp_path / "a" / "ssd300_VOC_metrics.jsonl", RUN_A)
    b = _write_log(tmp_path / "b" / "ssd300_VOC_metrics.jsonl", RUN_B)
    out = tmp_path / "cmp.png"
    assert plot.main([str(a), str(b.parent), "-o", str(out), "--title", "a vs b"]) == 0
    said = capsys.readouterr().out
    assert "a/ssd300_VOC: 4 points to iteration 4" in said
    assert "b/ssd300_VOC: 2 points to iteration 4" in said
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] == 800 and picture.shape[0] > 600

    empty = _write_log(tmp_path / "empty.jsonl", [{"type": "start", "iter": 0}])
    for argv, message in (([str(tmp_path / "nope.jsonl")], "no such metrics file"),
                          ([str(empty)], "no training loss records"),
                          ([str(tmp_path)], "no *_metrics.jsonl files"),
                          ([str(a), "--labels", "x", "y"], "--labels has 2 names for 1 runs")):
        assert plot.main([*argv, "-o", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_curves_writer_warns_and_never_raises(tmp_path, monkeypatch, caplog):
    log = _write_log(tmp_path / "run_metrics.jsonl", RUN_A)
    blocked = tmp_path / "blocked.png"
    blocked.mkdir()  # a folder where the picture should go: the save fails
    with caplog.at_level(logging.WARNING, logger="ssd.training.curves"):
        assert CurvesWriter(log, blocked)(7) is None
        assert CurvesWriter(tmp_path / "missing.jsonl", tmp_path / "m.png")(8) is None
    assert "could not draw" in caplog.text and "at iteration 7" in caplog.text
    assert "at iteration 8" in caplog.text
    caplog.clear()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    writer = CurvesWriter(log, tmp_path / "c.png")
    with caplog.at_level(logging.WARNING, logger="ssd.training.curves"):
        assert writer(1) is None and writer(2) is None
    assert caplog.text.count("matplotlib is not installed") == 1
    assert not (tmp_path / "c.png").exists()


# ----------------------------------------------------------------------------- TensorBoard

def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_tensorboard_scalars_and_resume_purge(tmp_path):
    tb = TensorBoardLogger(tmp_path / "tb")
    for rec in RUN_A:
        tb.write(rec)
    tb.close()
    assert _scalars(tmp_path / "tb", "loss/total") == [(1, 13.0), (2, 10.5), (3, 9.0), (4, 7.5)]
    assert _scalars(tmp_path / "tb", "eval/mAP") == [(3, 0.125), (4, 0.25)]
    assert _scalars(tmp_path / "tb", "eval_AP/dog") == [(3, 0.25)]
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "eval_AP/cat" not in acc.Tags()["scalars"]  # NaN AP: no point
    lr = _scalars(tmp_path / "tb", "train/lr")
    assert [s for s, _ in lr] == [1, 2, 3, 4] and lr[0][1] == pytest.approx(1e-4)

    resumed = TensorBoardLogger(tmp_path / "tb")  # continues from the checkpoint at 2
    for rec in ({"type": "start", "iter": 2}, _train(3, 1.0, 1.0), _train(4, 0.5, 0.5)):
        resumed.write(rec)
    resumed.close()
    assert _scalars(tmp_path / "tb", "loss/total") == [(1, 13.0), (2, 10.5), (3, 2.0), (4, 1.0)]


def test_tensorboard_failure_is_one_warning(tmp_path, caplog):
    def broken(log_dir, purge_step):
        raise PermissionError(f"{log_dir} is read-only")

    tb = TensorBoardLogger(tmp_path / "tb", writer_factory=broken)
    with caplog.at_level(logging.WARNING, logger="ssd.training.tensorboard_logger"):
        for rec in RUN_A:
            tb.write(rec)
        tb.images(4, [np.zeros((4, 4, 3), np.uint8)])
    assert caplog.text.count("tensorboard:") == 1 and "training goes on" in caplog.text
    assert not tb.enabled
    assert default_log_dir("", tmp_path / "w") == tmp_path / "w" / "tb"  # bare --tensorboard
    assert default_log_dir(str(tmp_path / "logs"), "w") == tmp_path / "logs"


def test_validation_images_show_the_models_detections():
    class Images:
        classes = tuple(f"c{i}" for i in range(20))

        def __init__(self) -> None:
            self.images = [cv2.imread(str(p)) for p in sorted(SAMPLE.glob("JPEGImages/*"))[:2]]

        def __len__(self) -> int:
            return len(self.images)

        def pull_image(self, i: int) -> np.ndarray:
            return self.images[i]

    net = controlled_ssd(box=(0.25, 0.3, 0.75, 0.8), label=11, score=0.9)
    net.phase = "train"
    net.train()
    data = Images()
    pictures = ValidationImages(lambda: data, count=5, threshold=0.3).draw(net)
    assert net.phase == "train" and net.training  # put back as it was
    assert len(pictures) == 2
    for bgr, rgb in zip(data.images, pictures):
        h, w = bgr.shape[:2]
        assert rgb.shape == bgr.shape
        x1, y1, y2 = round(0.25 * w), round(0.3 * h), round(0.8 * h)
        edge = rgb[y1 + 20:y2 - 20, x1].astype(np.float64)
        assert np.abs(edge - bgr[y1 + 20:y2 - 20, x1, ::-1]).mean() > 40  # the box is drawn
        far = (slice(round(0.85 * h), h), slice(round(0.8 * w), w))
        assert np.array_equal(rgb[far], bgr[far][..., ::-1])  # the rest is the image
    high = ValidationImages(data, count=1, threshold=0.95).draw(net)
    assert np.array_equal(high[0], data.images[0][..., ::-1])  # nothing above 0.95


# ----------------------------------------------------------------------------- train.py

@pytest.mark.slow
def test_train_refreshes_curves_at_each_checkpoint_and_logs_tensorboard(tmp_path, monkeypatch,
                                                                        capsys):
    voc = tmp_path / "data" / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    train_id, test_id = "2007_000027", "2007_000032"
    for i in (train_id, test_id):
        shutil.copy(SAMPLE / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(SAMPLE / "Annotations" / f"{i}.xml", voc / "Annotations")
    (voc / "ImageSets/Main/trainval.txt").write_text(train_id + "\n")
    (voc / "ImageSets/Main/test.txt").write_text(test_id + "\n")

    drawn: list[int] = []
    original = curves.CurvesWriter.__call__

    def spy(self, iteration=None):
        out = original(self, iteration)
        drawn.append((iteration, out is not None and out.is_file()))
        return out

    monkeypatch.setattr(curves.CurvesWriter, "__call__", spy)
    out = tmp_path / "weights"
    with pytest.raises(SystemExit) as done:
        main(["--dataset_root", str(tmp_path / "data"), "--train_sets", "2007:trainval",
              "--basenet", "none", "--batch_size", "1", "--num_workers", "0", "--device", "cpu",
              "--log_every", "1", "--no_progress", "--seed", "0", "--save_folder", str(out),
              "--max_iter", "2", "--checkpoint_every", "1", "--eval_every", "2",
              "--tensorboard"])
    assert done.value.code == 0, capsys.readouterr().err
    assert drawn == [(1, True), (2, True)]  # after each checkpoint
    assert cv2.imread(str(out / "ssd300_VOC_curves.png")) is not None

    recs = read_metrics(out / "ssd300_VOC_metrics.jsonl")
    train = [r for r in recs if r["type"] == "train"]
    (ev,) = [r for r in recs if r["type"] == "eval"]
    tb = out / "tb"
    assert _scalars(tb, "loss/total") == [(r["iter"], pytest.approx(r["loss"])) for r in train]
    assert _scalars(tb, "loss/conf") == [(r["iter"], pytest.approx(r["loss_c"])) for r in train]
    assert _scalars(tb, "train/lr") == [(1, pytest.approx(1e-3)), (2, pytest.approx(1e-3))]
    assert [s for s, _ in _scalars(tb, "train/images_per_s")] == [1, 2]
    assert _scalars(tb, "eval/mAP") == [(2, pytest.approx(ev["mAP"]))]
    acc = EventAccumulator(str(tb), size_guidance={"images": 0})
    acc.Reload()
    assert acc.Tags()["images"] == ["eval_images/0"]  # the one validation image
    (image,) = acc.Images("eval_images/0")
    test_image = cv2.imread(str(SAMPLE / "JPEGImages" / f"{test_id}.jpg"))
    assert (image.step, image.height, image.width) == (2, *test_image.shape[:2])
    json.dumps(ev)  # the record the scalars came from is plain JSON
