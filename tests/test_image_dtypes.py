"""Images of every dtype, shape and PIL mode give the same pixels (and the same detections) as
the same picture read from a file; bad pixels and thresholds get clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ssd.data.image_io import load_bgr_image, read_image
from ssd.data.pixels import to_bgr_uint8

H, W = 24, 32


@pytest.fixture(scope="module")
def pics(tmp_path_factory):
    """One colour and one gray picture, as 8-bit and 16-bit files and as arrays."""
    d = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    low = rng.integers(0, 256, (H, W, 3), dtype=np.uint16)
    rgb16 = rgb.astype(np.uint16) * 256 + low  # high byte = the 8-bit picture
    gray, gray16 = rgb[:, :, 1], rgb16[:, :, 1]
    alpha8 = rng.integers(0, 256, (H, W, 1), dtype=np.uint8)
    cv2.imwrite(str(d / "c8.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(d / "c16.png"), rgb16[:, :, ::-1])
    cv2.imwrite(str(d / "c8a.png"), np.concatenate([rgb[:, :, ::-1], alpha8], 2))
    cv2.imwrite(str(d / "g8.png"), gray)
    cv2.imwrite(str(d / "g16.png"), gray16)
    Image.fromarray(gray > 127).save(d / "bits.png")
    Image.fromarray(np.dstack([gray, alpha8[:, :, 0]]), "LA").save(d / "la.png")
    Image.fromarray(rgb).quantize(17).save(d / "pal.png")
    return {"dir": d, "rgb": rgb, "rgb16": rgb16, "gray": gray, "gray16": gray16,
            "alpha8": alpha8}


def _bgr(image):
    out, _ = load_bgr_image(image)
    assert out.dtype == np.uint8 and out.shape[2] == 3 and out.flags.c_contiguous
    return out


def test_colour_arrays_of_every_dtype_match_the_file(pics):
    rgb, rgb16 = pics["rgb"], pics["rgb16"]
    want = read_image(pics["dir"] / "c8.png")
    np.testing.assert_array_equal(want, rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_image(pics["dir"] / "c16.png"), want)  # 16-bit file
    alpha = pics["alpha8"]
    cases = {
        "uint8": rgb, "uint16": rgb16, "int32 16-bit values": rgb16.astype(np.int32),
        "uint32 16-bit values": rgb16.astype(np.uint32),
        "int8": None, "int16": rgb.astype(np.int16), "int64": rgb.astype(np.int64),
        "uint64": rgb.astype(np.uint64), "big-endian uint16": rgb16.astype(">u2"),
        "float32 [0, 1]": rgb.astype(np.float32) / 255, "float64 [0, 1]": rgb / 255.0,
        "float16 [0, 1]": (rgb / 255.0).astype(np.float16),
        "float32 [0, 255]": rgb.astype(np.float32), "float64 [0, 255]": rgb.astype(np.float64),
        "rgba uint8": np.concatenate([rgb, alpha], 2),
        "rgba uint16": np.concatenate([rgb16, alpha.astype(np.uint16) * 257], 2),
        "rgba float": np.concatenate([rgb, alpha], 2) / 255.0,
        "PIL RGB": Image.fromarray(rgb), "PIL RGBA": Image.fromarray(
            np.concatenate([rgb, alpha], 2), "RGBA"),
        "PIL from the 16-bit file": Image.open(pics["dir"] / "c16.png"),
        "PIL RGBX": Image.fromarray(rgb).convert("RGBX"),
        "non-contiguous": np.asfortranarray(rgb),
    }
    for name, arr in cases.items():
        if arr is None:
            continue
        np.testing.assert_array_equal(_bgr(arr), want, err_msg=name)
    # int8 holds 8-bit values up to 127.
    half = rgb // 2
    np.testing.assert_array_equal(_bgr(half.astype(np.int8)), half[:, :, ::-1])
    # RGBA files drop alpha the same way arrays and PIL images do.
    np.testing.assert_array_equal(read_image(pics["dir"] / "c8a.png"), want)
    np.testing.assert_array_equal(_bgr(Image.open(pics["dir"] / "c8a.png")), want)


def test_gray_arrays_and_pil_modes_match_the_file(pics):
    gray, gray16, d = pics["gray"], pics["gray16"], pics["dir"]
    want = read_image(d / "g8.png")
    np.testing.assert_array_equal(want, np.repeat(gray[:, :, None], 3, 2))
    np.testing.assert_array_equal(read_image(d / "g16.png"), want)
    la = np.dstack([gray, pics["alpha8"][:, :, 0]])
    pil16 = Image.open(d / "g16.png")
    assert pil16.mode.startswith("I;16")
    cases = {
        "[H, W]": gray, "[H, W, 1]": gray[:, :, None], "[H, W, 2] gray + alpha": la,
        "[H, W] uint16": gray16, "[H, W, 1] float [0, 1]": gray[:, :, None] / 255.0,
        "PIL L": Image.fromarray(gray), "PIL LA": Image.fromarray(la, "LA"),
        "PIL LA file": Image.open(d / "la.png"), "PIL I;16": pil16,
        "PIL I": pil16.convert("I"), "PIL F [0, 1]": Image.fromarray(
            gray.astype(np.float32) / 255, "F"),
        "PIL F [0, 255]": Image.fromarray(gray.astype(np.float32), "F"),
    }
    for name, img in cases.items():
        np.testing.assert_array_equal(_bgr(img), want, err_msg=name)
    np.testing.assert_array_equal(read_image(d / "la.png"), want)


def test_bits_palettes_and_other_pil_modes(pics):
    d, rgb = pics["dir"], pics["rgb"]
    bits = read_image(d / "bits.png")
    assert set(np.unique(bits)) == {0, 255}
    np.testing.assert_array_equal(_bgr(pics["gray"] > 127), bits)  # bool array
    np.testing.assert_array_equal(_bgr(Image.open(d / "bits.png")), bits)  # PIL mode 1
    pal = Image.open(d / "pal.png")
    assert pal.mode == "P"
    np.testing.assert_array_equal(_bgr(pal), read_image(d / "pal.png"))
    np.testing.assert_array_equal(_bgr(pal.convert("PA")), read_image(d / "pal.png"))
    for mode in ("CMYK", "YCbCr", "HSV", "LAB", "RGBa"):
        img = Image.fromarray(rgb).convert(mode)
        np.testing.assert_array_equal(_bgr(img), np.asarray(img.convert("RGB"))[:, :, ::-1],
                                      err_msg=mode)


def test_training_data_uses_the_same_rules(pics):
    # Files decode in BGR order; the same conversion then applies as to user arrays.
    rgb16 = pics["rgb16"]
    np.testing.assert_array_equal(to_bgr_uint8(rgb16[:, :, ::-1], order="bgr"),
                                  to_bgr_uint8(rgb16, order="rgb"))
    np.testing.assert_array_equal(to_bgr_uint8(rgb16[:, :, ::-1]),
                                  read_image(pics["dir"] / "c16.png"))


@pytest.mark.parametrize("arr, match", [
    (np.full((4, 5, 3), np.nan, np.float32), "60 NaN"),
    (np.array([[[0.5, np.inf, 0.1]]]), "1 infinite"),
    (np.full((4, 5, 3), -0.3), r"\[0, 1\] or in \[0, 255\]"),
    (np.full((4, 5, 3), 300.0), "not normalised"),
    (np.full((4, 5, 3), -1, np.int16), "negative"),
    (np.full((4, 5, 3), 70000, np.int32), "above 65535"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((5, 0), np.uint8), "empty"),
    (np.zeros((4, 5, 7), np.uint8), "shape"),
    (np.zeros((3, 20, 30), np.uint8), "channels-first"),
    (np.zeros((2, 4, 5, 3), np.uint8), "shape"),
    (np.zeros(5, np.uint8), "shape"),
])
def test_bad_pixels_and_shapes_are_value_errors(arr, match):
    with pytest.raises(ValueError, match=match):
        load_bgr_image(arr)


def test_non_numeric_images_are_type_errors():
    for bad in (np.zeros((4, 5, 3), np.complex64), np.zeros((4, 5, 3), object),
                torch.zeros(4, 5, 3), [[1, 2], [3, 4]]):
        with pytest.raises(TypeError):
            load_bgr_image(bad)


@pytest.fixture(scope="module")
def detector():
    from ssd.data import VOC_CLASSES
    from ssd.detector import Detector
    from ssd.model import build_ssd

    torch.manual_seed(0)
    return Detector(build_ssd("test", 300, 21), VOC_CLASSES, "cpu", batch_size=1)


@pytest.mark.parametrize("threshold, error, match", [
    (1.5, ValueError, r"threshold must be in \[0, 1\], got 1.5"),
    (-0.1, ValueError, "got -0.1"),
    (float("nan"), ValueError, "threshold is NaN"),
    (float("inf"), ValueError, "got inf"),
    ("0.5", TypeError, "threshold must be a number"),
    (None, TypeError, "threshold must be a number"),
])
def test_thresholds_out_of_range_are_refused(detector, pics, threshold, error, match):
    with pytest.raises(error, match=match):
        detector.predict(pics["rgb"], threshold=threshold)


def test_predict_on_16_bit_and_float_arrays_equals_predict_on_the_file(detector, pics):
    d, rgb16 = pics["dir"], pics["rgb16"]
    got = detector.predict([d / "c8.png", rgb16, pics["rgb"] / 255.0], threshold=0.0)
    assert len(got[0]) > 0 and got[0].image_size == (H, W)
    for i, r in enumerate(got[1:], 1):
        np.testing.assert_array_equal(r.boxes, got[0].boxes, err_msg=str(i))
        np.testing.assert_array_equal(r.scores, got[0].scores, err_msg=str(i))
        np.testing.assert_array_equal(r.labels, got[0].labels, err_msg=str(i))


def test_drawing_uses_the_same_rules(pics):
    from ssd.visualize import draw_detections

    empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}
    np.testing.assert_array_equal(draw_detections(pics["rgb16"], empty), pics["rgb"])
    with pytest.raises(ValueError, match="NaN"):
        draw_detections(np.full((4, 5, 3), np.nan), empty)


@pytest.mark.parametrize("kw", [{"conf_thresh": 1.5}, {"nms_thresh": -0.1},
                                {"conf_thresh": float("nan")}, {"top_k": 0}])
def test_from_checkpoint_refuses_bad_detection_settings(tmp_path, kw):
    from ssd import build_ssd
    from ssd.detector import Detector

    path = tmp_path / "net.pth"
    torch.save(build_ssd("test", 300, 21).state_dict(), path)
    with pytest.raises(ValueError, match=next(iter(kw))):
        Detector.from_checkpoint(path, device="cpu", **kw)


@pytest.mark.parametrize("flag", ["--confidence_threshold=2", "--nms_threshold=nan",
                                  "--top_k=0"])
def test_eval_refuses_out_of_range_flags(flag, capsys):
    from ssd.evaluation.cli import eval_parser

    with pytest.raises(SystemExit) as e:
        eval_parser().parse_args([flag])
    assert e.value.code == 2
    assert flag.split("=")[0] in capsys.readouterr().err
