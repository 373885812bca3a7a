"""One evaluator per benchmark: the shared interface, VOC and COCO behind it, their PR pictures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ssd.evaluation import COCOEvaluator, VOCEvaluator, evaluator_for
from ssd.evaluation.results import to_jsonable
from ssd.evaluation.runner import evaluate_results, evaluate_voc, voc_set
from ssd.evaluation.voc import voc_eval

REPO = Path(__file__).resolve().parents[1]
VOC_ROOT = REPO / "data" / "samples" / "voc_mini" / "VOCdevkit"
COCO_ROOT = REPO / "data" / "samples" / "coco_mini"


@pytest.fixture(scope="module")
def voc_test():
    from ssd.data import BaseTransform, VOCDetection

    ds = VOCDetection(VOC_ROOT, [("2007", "test")], BaseTransform(300), keep_difficult=True)
    ds.ids = ds.ids[:8]  # 8 images: some classes have ground truth, others none
    return ds


@pytest.fixture(scope="module")
def coco_val():
    from ssd.data import COCODetection

    return COCODetection(COCO_ROOT, "val2017")


def _noisy_voc_boxes(ds, seed=0):
    """Most ground-truth boxes, jittered, with random scores, plus false alarms: curves that
    are neither perfect nor empty."""
    rng = np.random.default_rng(seed)
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(len(ds))]
                 for _ in range(ds.num_classes)]
    for i in range(len(ds)):
        _, rows = ds.pull_anno(i)
        w, h = ds.image_size(i)
        for x1, y1, x2, y2, label in rows:
            if rng.random() < 0.2:
                continue
            j = rng.normal(0.0, 0.1 * (x2 - x1), 4)
            row = [[x1 + j[0], y1 + j[1], x2 + j[2], y2 + j[3], rng.random()]]
            all_boxes[int(label) + 1][i] = np.vstack([all_boxes[int(label) + 1][i], row])
        for c in rng.integers(1, ds.num_classes, 6):
            x, y = rng.random() * w * 0.6, rng.random() * h * 0.6
            row = [[x, y, x + 0.3 * w, y + 0.3 * h, 0.8 * rng.random()]]
            all_boxes[c][i] = np.vstack([all_boxes[c][i], row])
    return all_boxes


def _noisy_coco_boxes(ds, seed=0):
    rng = np.random.default_rng(seed)
    all_boxes = [[np.zeros((0, 5), np.float32) for _ in range(len(ds))]
                 for _ in range(ds.num_classes)]
    for i in range(len(ds)):
        w, h = ds.image_size(i)
        for x1, y1, x2, y2, label in ds.target_transform(ds.pull_anno(i), w, h):
            if rng.random() < 0.2:
                continue
            j = rng.normal(0.0, 0.08 * (x2 - x1) * w, 4)
            row = [[x1 * w + j[0], y1 * h + j[1], x2 * w + j[2], y2 * h + j[3], rng.random()]]
            all_boxes[int(label) + 1][i] = np.vstack([all_boxes[int(label) + 1][i], row])
        for c in rng.integers(1, ds.num_classes, 5):
            x, y = rng.random() * w * 0.6, rng.random() * h * 0.6
            row = [[x, y, x + 0.3 * w, y + 0.3 * h, 0.8 * rng.random()]]
            all_boxes[c][i] = np.vstack([all_boxes[c][i], row])
    return all_boxes


def test_evaluator_for_picks_the_benchmark_of_the_dataset(voc_test, coco_val):
    voc = evaluator_for(voc_test, set_name="mini")
    coco = evaluator_for(coco_val)
    assert isinstance(voc, VOCEvaluator) and voc.kind == "VOC" and voc.set_name == "mini"
    assert isinstance(coco, COCOEvaluator) and coco.kind == "COCO"
    assert coco.set_name == "val2017"

    class Pictures:
        ids = ["a.jpg", "b.jpg"]

    with pytest.raises(TypeError, match="no evaluator for Pictures"):
        evaluator_for(Pictures())


def test_voc_evaluator_writes_scores_and_cleans_its_files(voc_test, tmp_path):
    ev = evaluator_for(voc_test, cachedir=tmp_path / "cache")
    all_boxes = _noisy_voc_boxes(voc_test)
    files = ev.write_results(all_boxes, tmp_path)
    assert set(files) == {"det_files"} and len(files["det_files"]) == 20
    assert ev.find_results(tmp_path) == files  # the folder eval.py writes is found again
    scores = ev.score_files(files)
    # The same numbers as the classic function on the same files...
    classic = evaluate_voc(voc_set(voc_test), results_dir=tmp_path / "results")
    assert to_jsonable(scores.summary) == to_jsonable(
        {k: v for k, v in classic.items() if k != "det_files"})
    # ...and one curve per class, as long as the class's detections.
    (panel, curves), = ev.curves(scores).items()
    assert panel == "IoU > 0.5" and list(curves) == list(voc_test.classes)
    person = curves["person"]
    assert 0.0 < person.ap < 1.0 and len(person.recall) == scores.summary["num_detections"][
        "person"]
    assert np.all(np.diff(person.recall) >= 0) and person.recall[-1] <= 1.0
    table = ev.format_table(scores, len(voc_test))
    assert table.splitlines()[0].startswith("VOC 2007 test: 8 images, VOC07 11-point AP")
    assert f"{scores.summary['mAP']:.4f}" in table.splitlines()[-2] + table.splitlines()[-1]
    left = ev.remove_results({"other": "x", **files})
    assert left == {"other": "x"} and not (tmp_path / "results").exists()


def test_voc_curves_match_the_classic_voc_eval(voc_test, tmp_path):
    ev = evaluator_for(voc_test)
    files = ev.write_results(_noisy_voc_boxes(voc_test, seed=1), tmp_path)
    curves = ev.curves(ev.score_files(files))["IoU > 0.5"]
    imageset = tmp_path / "set.txt"
    imageset.write_text("".join(f"{i}\n" for _, i in voc_test.ids))
    annopath = str(VOC_ROOT / "VOC2007" / "Annotations" / "{:s}.xml")
    for name in ("person", "bird", "tvmonitor"):
        rec, prec, ap = voc_eval(str(tmp_path / "results" / "det_test_{:s}.txt"), annopath,
                                 imageset, name, use_07_metric=True)
        np.testing.assert_array_equal(curves[name].recall, rec)
        np.testing.assert_array_equal(curves[name].precision, prec)
        assert curves[name].ap == ap


def test_voc_figure_draws_each_class_from_its_curve(voc_test):
    from ssd.evaluation.plots import precision_envelope

    ev = evaluator_for(voc_test)
    scores = ev.score(_noisy_voc_boxes(voc_test))
    curves = ev.curves(scores)["IoU > 0.5"]
    fig = ev.plot(scores)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    defined = {k: c for k, c in curves.items() if not math.isnan(c.ap)}
    undefined = [k for k, c in curves.items() if math.isnan(c.ap)]
    assert 3 <= len(defined) < 20 and undefined
    assert len(ax.lines) == len(defined)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # Best class first, each with its AP.
    ranked = sorted(defined, key=lambda k: -defined[k].ap)
    assert labels == [f"{k}  AP {defined[k].ap:.3f}" for k in ranked]
    for line in ax.lines:
        c = defined[line.get_label().split("  AP ")[0]]
        x, y = line.get_xdata(), line.get_ydata()
        if len(c.recall):
            assert x[0] == 0.0 and x[-1] == c.recall[-1]
            assert y[0] == pytest.approx(c.precision.max())  # the envelope starts at the best
            assert np.all(np.diff(y) <= 1e-12)  # and never rises
        np.testing.assert_array_equal(np.c_[x, y].T, precision_envelope(c.recall, c.precision))
    note = " ".join(t.get_text() for t in ax.texts)
    assert all(k in note for k in undefined)
    assert f"Mean AP {scores.summary['mAP']:.3f} over {len(defined)} classes" in ax.get_title()


def test_precision_envelope_hand_case():
    from ssd.evaluation.plots import precision_envelope

    rec, prec = precision_envelope(np.array([0.0, 0.5, 0.5, 1.0]),
                                   np.array([0.0, 0.5, 0.33, 0.5]))
    np.testing.assert_array_equal(rec, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(prec, [0.5, 0.5, 0.5, 0.5, 0.5])
    rec, prec = precision_envelope(np.array([0.5, 1.0]), np.array([1.0, 0.4]))
    np.testing.assert_array_equal(prec, [1.0, 1.0, 0.4])


def test_coco_evaluator_curves_and_figure_agree_with_cocoeval(coco_val, tmp_path):
    ev = evaluator_for(coco_val, verbose=False)
    files = ev.write_results(_noisy_coco_boxes(coco_val), tmp_path)
    assert files == {"coco_results": str(tmp_path / "bbox_val2017_results.json")}
    assert ev.find_results(tmp_path) == files and ev.remove_results(files) == files
    scores = ev.score_files(files)
    s = scores.summary
    assert 0.2 < s["stats"]["AP"] < s["stats"]["AP50"] < 1.0 and s["mAP"] == s["stats"]["AP"]
    curves = ev.curves(scores)
    assert list(curves) == ["IoU 0.50", "IoU 0.75"]
    at50, at75 = curves["IoU 0.50"], curves["IoU 0.75"]
    defined = [k for k, v in s["ap"].items() if not math.isnan(v)]
    assert list(at50) == defined and len(defined) >= 30
    for name in defined:
        assert at50[name].ap == pytest.approx(s["ap50"][name])
        assert len(at50[name].recall) == 101
    # COCOeval's AP50 and AP75 are the means of these curves.
    assert np.mean([c.precision for c in at50.values()]) == pytest.approx(s["stats"]["AP50"])
    assert np.mean([c.precision for c in at75.values()]) == pytest.approx(s["stats"]["AP75"])

    fig = ev.plot(scores)
    assert len(fig.axes) == 3
    for ax, per_class, stat in ((fig.axes[0], at50, "AP50"), (fig.axes[1], at75, "AP75")):
        assert len(ax.lines) == len(per_class) + 1
        mean = ax.lines[-1]
        np.testing.assert_allclose(mean.get_ydata(),
                                   np.mean([c.precision for c in per_class.values()], axis=0))
        assert f"mean of {len(per_class)} classes, AP {s['stats'][stat]:.3f}" in \
            [t.get_text() for t in ax.get_legend().get_texts()]
    bars = fig.axes[2]
    heights = [p.get_height() for p in bars.patches]
    assert heights == [s["ap50"][k] for k in defined] + [s["ap"][k] for k in defined]
    assert [t.get_text() for t in bars.get_xticklabels()] == defined
    assert not fig.axes[0].texts  # the "nothing matches" note is only for empty curves


def test_coco_figure_without_detections(coco_val):
    ev = evaluator_for(coco_val, verbose=False)
    empty = [[np.zeros((0, 5))] * len(coco_val) for _ in range(coco_val.num_classes)]
    scores = ev.score(empty)
    assert ev.curves(scores) == {} and "no detections" in scores.summary["note"]
    fig = ev.plot(scores)
    assert len(fig.axes) == 3 and all(not ax.lines for ax in fig.axes[:2])
    assert "no detections" in fig.axes[0].texts[0].get_text()
    assert all(p.get_height() == 0.0 for p in fig.axes[2].patches)


def test_from_results_draws_pr_curves_and_skips_them_without_matplotlib(voc_test, tmp_path,
                                                                        monkeypatch):
    import cv2

    evaluator_for(voc_test).write_results(_noisy_voc_boxes(voc_test), tmp_path / "run")
    logged = []
    out = evaluate_results(voc_test, tmp_path / "run", save_folder=tmp_path / "a",
                           log=logged.append)
    png = tmp_path / "a" / "pr_curves.png"
    assert out["files"]["pr_curves"] == str(png)
    assert cv2.imread(str(png)).shape == (700, 1100, 3)
    assert json.loads((tmp_path / "a" / "results.json").read_text())["files"]["pr_curves"]
    # matplotlib is an optional extra: without it the numbers are still written.
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    logged.clear()
    again = evaluate_results(voc_test, tmp_path / "run", save_folder=tmp_path / "b",
                             log=logged.append)
    assert "pr_curves" not in again["files"] and again["ap"] == out["ap"]
    assert not (tmp_path / "b" / "pr_curves.png").exists()
    assert any("pr_curves.png not drawn" in m and "ssd[plots]" in m for m in logged)


def test_importing_ssd_and_its_evaluation_does_not_import_matplotlib():
    code = ("import sys, ssd, ssd.evaluation, ssd.evaluation.evaluators, ssd.evaluation.plots; "
            "print('matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_voc_figure_says_when_nothing_is_found(voc_test):
    ev = evaluator_for(voc_test)
    fig = ev.plot(ev.score(_noisy_voc_boxes(voc_test, seed=2)))
    assert not any("every curve is at recall 0" in t.get_text() for t in fig.axes[0].texts)
    # Every box moved off its object: all false alarms.
    far = [[d + np.array([5000.0, 5000.0, 5000.0, 5000.0, 0.0]) for d in per_image]
           for per_image in _noisy_voc_boxes(voc_test, seed=2)]
    scores = ev.score(far)
    assert all(v == 0.0 for v in scores.summary["ap"].values() if not math.isnan(v))
    fig = ev.plot(scores)
    assert any("every curve is at recall 0" in t.get_text() for t in fig.axes[0].texts)


class _ToyEvaluator:
    """A third benchmark, only to show the runner needs nothing but the interface."""

    kind = "TOY"
    validation_keys = ()

    def __init__(self, dataset):
        self.dataset, self.set_name = dataset, "toyset"

    @classmethod
    def accepts(cls, dataset):
        return hasattr(dataset, "toy_answers")

    @classmethod
    def for_dataset(cls, dataset, **options):
        return cls(dataset)

    def find_results(self, path):
        return {"toy_results": str(path)}

    def score_files(self, files):
        from ssd.evaluation import PRCurve, Scores

        hits = json.loads(Path(files["toy_results"]).read_text())
        ap = float(np.mean([h == a for h, a in zip(hits, self.dataset.toy_answers)]))
        return Scores({"mAP": ap, "ap": {"thing": ap}, "metric": "toy accuracy"},
                      {"all": {"thing": PRCurve(np.array([0.0, 1.0]), np.array([1.0, ap]), ap)}})

    def format_table(self, scores, num_images):
        return f"TOY {num_images} images: {scores.summary['mAP']:.2f}"

    def save_plot(self, scores, path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"toy picture")


def test_a_new_benchmark_needs_no_change_to_the_runner(tmp_path, monkeypatch):
    import ssd.evaluation.evaluators as evaluators

    monkeypatch.setattr(evaluators, "EVALUATORS", (_ToyEvaluator, *evaluators.EVALUATORS))

    class ToyData:
        toy_answers = [1, 2, 3, 4]

        def __len__(self):
            return 4

    (tmp_path / "answers.json").write_text("[1, 2, 0, 4]")
    logged = []
    out = evaluate_results(ToyData(), tmp_path / "answers.json", save_folder=tmp_path / "eval",
                           log=logged.append)
    assert out["dataset"] == "TOY" and out["set"] == "toyset" and out["mAP"] == 0.75
    assert logged[0] == "TOY 4 images: 0.75"
    assert (tmp_path / "eval" / "pr_curves.png").read_bytes() == b"toy picture"
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["ap"] == {"thing": 0.75} and saved["files"]["toy_results"].endswith(
        "answers.json")
