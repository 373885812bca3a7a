"""Deployment: ONNX graphs in ONNX Runtime and OpenCV, the torch-free OnnxDetector,
torch.export, and the ``python -m ssd.export`` CLI.

One SSD300 export is shared by the module (the exporter takes ~30 s); the NMS graph is built on
top of it without exporting again. SSD512 with a custom class count goes through the CLI."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import REPO, assert_same_detections, sample_images, scored_ssd

from ssd.box_utils import decode
from ssd.detection import detect
from ssd.export import NmsSettings, add_nms, export_onnx, nms_model, read_metadata
from ssd.export.graph import raw_phase

RTOL, ATOL = 1e-3, 1e-5  # torchvision's ONNX tests


@pytest.fixture(scope="module")
def model():
    return scored_ssd(300, 21)


@pytest.fixture(scope="module")
def onnx300(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "ssd300.onnx"
    export_onnx(model, path, class_names=[f"c{i}" for i in range(20)])
    return path


@pytest.fixture(scope="module")
def session300(onnx300):
    return _session(str(onnx300))


@pytest.fixture(scope="module")
def images3():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(3, 3, 300, 300, generator=g) * 255 - 117).float()


@pytest.fixture(scope="module")
def reference3(model, images3):
    return _reference(model, images3)


def _session(path_or_bytes):
    return ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])


def _reference(model, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """softmax(conf) and decoded boxes computed by the PyTorch model itself."""
    with torch.no_grad(), raw_phase(model) as net:
        loc, conf, priors = net(images)
    scores = torch.softmax(conf, dim=-1)
    boxes = decode(loc, priors, model.cfg["variance"])
    return scores.numpy(), boxes.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3])
def test_scores_and_boxes_match_pytorch_in_onnxruntime(session300, images3, reference3, batch):
    images = images3[:batch]
    scores, boxes = session300.run(["scores", "boxes"], {"images": images.numpy()})
    ref_scores, ref_boxes = (r[:batch] for r in reference3)
    assert scores.shape == (batch, 8732, 21) and boxes.shape == (batch, 8732, 4)
    np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_graph_contract(onnx300):
    proto = onnx.load(str(onnx300))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    (inp,) = proto.graph.input  # the priors and weights are constants, not inputs
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == "images" and dims[0].dim_param and [d.dim_value for d in dims[1:]] == \
        [3, 300, 300]
    assert [o.name for o in proto.graph.output] == ["scores", "boxes"]
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"NonMaxSuppression", "Loop", "If"}
    meta = read_metadata(proto)
    assert meta["graph"] == "scores_boxes" and meta["size"] == 300
    assert meta["num_classes"] == 21 and meta["class_names"][:2] == ["c0", "c1"]
    assert meta["mean"] == [104.0, 117.0, 123.0]


@pytest.mark.slow
def test_opencv_dnn_runs_the_default_graph(onnx300, images3, reference3):
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromONNX(str(onnx300))
    net.setInput(images3[1:2].numpy(), "images")
    scores, boxes = net.forward(["scores", "boxes"])
    ref_scores, ref_boxes = (r[1:2] for r in reference3)
    np.testing.assert_allclose(scores, ref_scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(boxes, ref_boxes, rtol=RTOL, atol=ATOL)


def _detect_rows(ref: torch.Tensor, b: int) -> list[tuple[float, int, list[float]]]:
    """detect()'s rows of image b as (score, 0-based label, box), best first."""
    rows = []
    for c in range(1, ref.shape[1]):
        kept = ref[b, c][ref[b, c, :, 0] > 0]
        rows += [(r[0], c - 1, r[1:]) for r in kept.tolist()]
    return sorted(rows, key=lambda r: -r[0])


def _assert_nms_outputs_equal_detect(outputs, ref: torch.Tensor) -> None:
    det_boxes, det_scores, det_labels, count = outputs
    for b in range(ref.shape[0]):
        rows = _detect_rows(ref, b)
        n = int(count[b])
        assert n == len(rows)
        assert det_scores[b, :n].tolist() == [r[0] for r in rows]
        assert det_labels[b, :n].tolist() == [r[1] for r in rows]
        np.testing.assert_array_equal(det_boxes[b, :n], np.array([r[2] for r in rows],
                                                                 np.float32).reshape(-1, 4))
        assert not det_scores[b, n:].any() and not det_boxes[b, n:].any()
        assert not det_labels[b, n:].any()


@pytest.mark.parametrize("settings", [NmsSettings(), NmsSettings(50, 0.3, 0.5, 25),
                                      NmsSettings(10, 0.05, 0.3, None)])
def test_nms_graph_equals_detect(settings):
    from ssd.config import get_config
    from ssd.priors import prior_boxes

    priors = prior_boxes(get_config("voc300"))
    g = torch.Generator().manual_seed(settings.top_k)
    loc = torch.randn(2, priors.shape[0], 4, generator=g) * 0.7
    scores = torch.softmax(torch.randn(2, priors.shape[0], 21, generator=g) * 2.5, dim=-1)
    boxes = decode(loc, priors, (0.1, 0.2))
    proto = nms_model(21, priors.shape[0], settings)
    outputs = _session(proto.SerializeToString()).run(
        None, {"scores": scores.numpy(), "boxes": boxes.numpy()})
    slots = settings.slots(21, priors.shape[0])
    assert [o.shape for o in outputs] == [(2, slots, 4), (2, slots), (2, slots), (2,)]
    ref = detect(loc, scores, priors, 21, top_k=settings.top_k,
                 conf_thresh=settings.conf_thresh, nms_thresh=settings.nms_thresh,
                 max_per_image=settings.max_per_image)
    _assert_nms_outputs_equal_detect(outputs, ref)


def test_nms_graph_threshold_and_overlap_edges():
    """A score equal to conf_thresh is dropped and an IoU equal to nms_thresh is kept, as in
    detect()."""
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.5], [0.0, 0.0, 1.0, 0.25],
                           [0.5, 0.5, 0.75, 0.75]]])
    scores = torch.tensor([[[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.75, 0.25]]])
    settings = NmsSettings(top_k=4, conf_thresh=0.25, nms_thresh=0.5)
    outputs = _session(nms_model(2, 4, settings).SerializeToString()).run(
        None, {"scores": scores.numpy(), "boxes": boxes.numpy()})
    # box 1 has IoU 0.5 with box 0 (kept), box 2 IoU 0.5 with box 1 (kept); box 3 scores 0.25
    assert outputs[3].tolist() == [3]
    assert outputs[1][0, :3].tolist() == pytest.approx([0.9, 0.8, 0.7])


@pytest.mark.slow
def test_nms_graph_on_the_network(onnx300, images3, reference3):
    """The full graph with NMS: its scores/boxes are PyTorch's and its detections are the
    detection step's on them."""
    proto = onnx.load(str(onnx300))
    settings = NmsSettings(top_k=200, conf_thresh=0.01, nms_thresh=0.45, max_per_image=100)
    add_nms(proto, 21, 8732, settings)
    full = _session(proto.SerializeToString())
    out = full.run(None, {"images": images3[1:].numpy()})
    names = [o.name for o in full.get_outputs()]
    assert names == ["scores", "boxes", "det_boxes", "det_scores", "det_labels",
                     "num_detections"]
    ref_scores, ref_boxes = (r[1:] for r in reference3)
    np.testing.assert_allclose(out[0], ref_scores, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out[1], ref_boxes, rtol=RTOL, atol=ATOL)
    alone = _session(nms_model(21, 8732, settings).SerializeToString()).run(
        None, {"scores": out[0], "boxes": out[1]})
    for got, want in zip(out[2:], alone):
        np.testing.assert_array_equal(got, want)
    assert (out[5] == 100).all()  # the cap: random weights give thousands of candidates


def test_export_rejects_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=13)
    with pytest.raises(ValueError, match="batch"):
        export_onnx(model, tmp_path / "m.onnx", batch="many")
    with pytest.raises(ValueError, match="class names"):
        export_onnx(model, tmp_path / "m.onnx", class_names=["a", "b"])
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- OnnxDetector

@pytest.fixture(scope="module")
def nms300(onnx300, tmp_path_factory):
    from ssd.export import add_nms_to_file

    path = tmp_path_factory.mktemp("onnx") / "ssd300_nms.onnx"
    add_nms_to_file(onnx300, path)
    return path


@pytest.fixture(scope="module")
def torch_results(model):
    import copy

    from ssd import Detector

    detector = Detector(copy.deepcopy(model), [f"c{i}" for i in range(20)], "cpu")
    return detector.predict(sample_images(2), threshold=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["default", "nms"])
def test_onnx_detector_gives_detector_results(onnx300, nms300, torch_results, graph):
    from ssd import OnnxDetector

    detector = OnnxDetector(onnx300 if graph == "default" else nms300, batch_size=2)
    assert detector.has_nms == (graph == "nms")
    results = detector.predict(sample_images(2), threshold=0.5)
    assert sum(len(r) for r in torch_results) > 100  # the weights give real detections
    for got, want in zip(results, torch_results):
        assert got.source == want.source
        assert_same_detections(got, want)
    single = detector.predict(sample_images(1)[0], threshold=0.5, as_dict=True)
    assert set(single) == set(torch_results[0].to_dict())
    assert single["image_size"] == list(torch_results[0].image_size)
    assert len(single["scores"]) == len(torch_results[0])


@pytest.mark.slow
def test_onnx_detector_runs_without_torch(nms300):
    import subprocess
    import sys

    script = f"""
import sys
from ssd import OnnxDetector
det = OnnxDetector({str(nms300)!r}, threads=1)
result = det.predict({sample_images(1)[0]!r}, threshold=0.5)
assert len(result) > 0
import ssd.data, ssd.detections  # noqa
assert "torch" not in sys.modules, "torch was imported"
print("ok", len(result))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok")


def test_onnx_detector_errors(tmp_path):
    from ssd import OnnxDetector

    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        OnnxDetector(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx"):
        OnnxDetector(bad)
    other = tmp_path / "other.onnx"
    onnx.save(nms_model(3, 10, NmsSettings(top_k=5)), str(other))
    with pytest.raises(ValueError, match="not an SSD graph"):
        OnnxDetector(other)


@pytest.mark.slow
def test_onnx_detector_refuses_other_settings_for_an_nms_graph(nms300):
    from ssd import OnnxDetector

    with pytest.raises(ValueError, match="NMS inside"):
        OnnxDetector(nms300, nms_thresh=0.6)


def test_detect_numpy_equals_detect():
    from ssd.config import get_config
    from ssd.onnx_detector import detect_numpy
    from ssd.priors import prior_boxes

    priors = prior_boxes(get_config("voc300"))
    g = torch.Generator().manual_seed(5)
    loc = torch.randn(1, priors.shape[0], 4, generator=g) * 0.7
    scores = torch.softmax(torch.randn(1, priors.shape[0], 21, generator=g) * 2.5, dim=-1)
    boxes = decode(loc, priors, (0.1, 0.2))
    for top_k, conf, iou, cap in [(200, 0.01, 0.45, None), (30, 0.2, 0.3, 40)]:
        ref = detect(loc, scores, priors, 21, top_k=top_k, conf_thresh=conf, nms_thresh=iou,
                     max_per_image=cap)
        got = detect_numpy(scores[0].numpy(), boxes[0].numpy(), top_k, conf, iou, cap)
        for c in range(21):
            want = ref[0, c][ref[0, c, :, 0] > 0].numpy()
            np.testing.assert_array_equal(got[c], want)


# ----------------------------------------------------------------------------- torch.export

@pytest.mark.slow
def test_torch_export_program_reloads_with_dynamic_batch(model, images3, reference3, tmp_path):
    from ssd.export import export_program, load_program

    path = tmp_path / "ssd300.pt2"
    export_program(model, path)
    reloaded = load_program(path)
    for batch in (1, 3):
        with torch.no_grad():
            loc, conf = reloaded(images3[:batch])
        assert loc.shape == (batch, 8732, 4) and conf.shape == (batch, 8732, 21)
        scores = torch.softmax(conf, dim=-1).numpy()
        boxes = decode(loc, model.priors, model.cfg["variance"]).numpy()
        np.testing.assert_allclose(scores, reference3[0][:batch], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(boxes, reference3[1][:batch], rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_exports_ssd512_with_custom_classes_and_nms(tmp_path):
    import subprocess
    import sys

    from ssd.config import get_config
    from ssd.weights import save_weights_file

    model = scored_ssd(512, 4, seed=1)
    weights = tmp_path / "custom512.pth"
    save_weights_file(weights, model.state_dict(), config=get_config("voc512", 512, 4),
                      class_names=["cat", "dog", "bird"])
    out = tmp_path / "custom512.onnx"
    proc = subprocess.run([sys.executable, "-m", "ssd.export", "--trained_model", str(weights),
                           "--output", str(out), "--nms", "--max_per_image", "50",
                           "--conf_thresh", "0.05"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "written to" in proc.stdout
    meta = read_metadata(onnx.load(str(out)))
    assert meta["class_names"] == ["cat", "dog", "bird"] and meta["size"] == 512
    assert meta["max_per_image"] == 50 and meta["conf_thresh"] == 0.05
    session = _session(str(out))
    g = torch.Generator().manual_seed(2)
    images = (torch.rand(2, 3, 512, 512, generator=g) * 255 - 117).float()
    ref_scores, ref_boxes = _reference(model, images)
    for batch in (1, 2):
        out_b = session.run(None, {"images": images[:batch].numpy()})
        assert out_b[0].shape == (batch, 24564, 4)
        np.testing.assert_allclose(out_b[0], ref_scores[:batch], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(out_b[1], ref_boxes[:batch], rtol=RTOL, atol=ATOL)
        assert out_b[2].shape == (batch, 50, 4) and out_b[5].shape == (batch,)
    alone = _session(nms_model(4, 24564, NmsSettings(200, 0.05, 0.45, 50)).SerializeToString())
    for got, want in zip(out_b[2:], alone.run(None, {"scores": out_b[0], "boxes": out_b[1]})):
        np.testing.assert_array_equal(got, want)


def test_cli_reports_a_missing_checkpoint(tmp_path, capsys):
    from ssd.export.cli import main

    code = main(["--trained_model", str(tmp_path / "nope.pth"), "--output",
                 str(tmp_path / "m.onnx")])
    assert code == 2
    assert "nope.pth" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_onnx_detector_pads_the_last_run_of_a_fixed_batch_graph(onnx300, tmp_path):
    from ssd import OnnxDetector

    proto = onnx.load(str(onnx300))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    dim.ClearField("dim_param")
    dim.dim_value = 2
    fixed = tmp_path / "fixed2.onnx"
    onnx.save(proto, str(fixed))
    detector = OnnxDetector(fixed, batch_size=8)
    assert detector.fixed_batch == 2 and detector.batch_size == 2
    images = sample_images(3)
    got = detector.predict(images, threshold=0.5)
    want = OnnxDetector(onnx300, batch_size=3).predict(images, threshold=0.5)
    assert len(got) == 3
    for a, b in zip(got, want):
        assert_same_detections(a, b)


def test_parse_batch():
    from ssd.export.onnx_export import parse_batch

    assert parse_batch("dynamic") is None and parse_batch(None) is None
    assert parse_batch("4") == 4 and parse_batch(1) == 1
    for bad in ("0", -2, "two"):
        with pytest.raises(ValueError, match="batch must be"):
            parse_batch(bad)


@pytest.mark.slow
def test_onnx_detector_precision_falls_back_where_onnxruntime_has_no_bf16(nms300, monkeypatch):
    import ssd.precision
    from ssd import OnnxDetector

    monkeypatch.setattr(ssd.precision, "native_bf16", lambda device_type="cpu": False)
    with pytest.warns(ssd.precision.PrecisionWarning):
        assert OnnxDetector(nms300, precision="bf16").precision == "fp32"
    monkeypatch.setattr(ssd.precision, "native_bf16", lambda device_type="cpu": True)
    expected = "bf16" if __import__("platform").machine().lower() in ("aarch64", "arm64") \
        else "fp32"
    assert OnnxDetector(nms300, precision="auto").precision == expected


def test_configs_with_other_post_processing_are_refused(tmp_path):
    from ssd.export.onnx_export import check_exportable

    check_exportable({"name": "VOC", "detect": {"max_per_image": None, "clip_boxes": False}})
    with pytest.raises(ValueError, match="clip_boxes"):
        check_exportable({"name": "tv", "detect": {"clip_boxes": True, "max_per_image": 200}})


def test_onnx_detector_applies_a_normalize_rule():
    from ssd.onnx_detector import OnnxDetector

    det = OnnxDetector.__new__(OnnxDetector)
    det.size, det.mean = 4, (104.0, 117.0, 123.0)
    det.normalize = {"scale": 255.0, "mean": [0.48, 0.46, 0.41], "std": [0.23, 0.22, 0.23]}
    bgr = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).float()
    mean = torch.tensor(det.normalize["mean"])[:, None, None]
    std = torch.tensor(det.normalize["std"])[:, None, None]
    np.testing.assert_array_equal(det._preprocess(bgr), ((rgb / 255.0 - mean) / std).numpy())
