"""read_image: every input becomes 3-channel uint8 BGR in the stored layout; clear errors."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from ssd.data import BadSampleError, DataWarning, MissingFileError, read_image
from ssd.data.image_io import exif_orientation


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)


def test_color_png_roundtrip(tmp_path, rgb):
    cv2.imwrite(str(tmp_path / "a.png"), rgb)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, rgb)


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb):
    gray = rgb[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "la.png")  # gray + alpha
    for name in ("g.png", "la.png"):
        out = read_image(tmp_path / name)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[:, :, c], gray)


def test_palette_png_is_expanded_to_bgr(tmp_path, rgb):
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, np.asarray(pal.convert("RGB"))[:, :, ::-1])


def test_16_bit_keeps_the_high_byte(tmp_path):
    a16 = np.random.default_rng(1).integers(0, 65536, (10, 12, 3)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), a16)
    cv2.imwrite(str(tmp_path / "g16.png"), a16[:, :, 0])
    out = read_image(tmp_path / "c16.png")
    assert out.dtype == np.uint8 and out.shape == (10, 12, 3)
    np.testing.assert_array_equal(out, (a16 >> 8).astype(np.uint8))
    out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out, np.repeat((a16[:, :, :1] >> 8).astype(np.uint8), 3, 2))


def test_bgra_drops_alpha(tmp_path, rgb):
    alpha = np.full((20, 30, 1), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), np.concatenate([rgb, alpha], 2))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)


def test_bad_files_name_the_file_and_id(tmp_path, rgb):
    with pytest.raises(MissingFileError, match=r"nope\.jpg \(id 42\)"):
        read_image(tmp_path / "nope.jpg", 42)
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadSampleError, match=r"is empty: .*empty\.jpg"):
        read_image(tmp_path / "empty.jpg")
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(BadSampleError, match=r"dir\.jpg"):
        read_image(tmp_path / "dir.jpg")
    jpeg = cv2.imencode(".jpg", rgb)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[:200])
    with pytest.raises(BadSampleError, match=r"cut\.jpg \(id x\).*corrupt"):
        read_image(tmp_path / "cut.jpg", "x")
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(BadSampleError, match=r"text\.jpg"):
        read_image(tmp_path / "text.jpg")


def save_exif_jpeg(path, bgr, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(bgr[:, :, ::-1]).save(path, exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_parsed_and_ignored(tmp_path, rgb, orientation):
    path = tmp_path / "e.jpg"
    save_exif_jpeg(path, rgb, orientation)
    assert exif_orientation(path.read_bytes()) == orientation
    # PIL's own reading of the tag agrees
    assert Image.open(path).getexif().get(0x0112) == orientation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = read_image(path)  # no annotation size: ambiguous, so a warning for flags > 1
    assert out.shape == (20, 30, 3)  # stored layout, never rotated
    decoded = cv2.imdecode(np.fromfile(str(path), np.uint8),
                           cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(out, decoded)
    assert any(issubclass(w.category, DataWarning) for w in caught) == (orientation > 1)


def test_exif_size_check(tmp_path, rgb):
    path = tmp_path / "e.jpg"
    save_exif_jpeg(path, rgb, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the recorded size proves the stored layout: silent
        assert read_image(path, expected_size=(30, 20)).shape == (20, 30, 3)
    with pytest.raises(BadSampleError, match=r"30x20.*records 20x30.*EXIF orientation flag "
                                             r"\(6: rotated 90"):
        read_image(path, expected_size=(20, 30))
    assert exif_orientation(b"\x89PNG....") == 0
    assert exif_orientation(cv2.imencode(".jpg", rgb)[1].tobytes()) == 0
