"""Reading dataset images: always 3-channel uint8 BGR in the file's stored pixel layout.

Both datasets read through :func:`read_image`, so VOC and COCO images behave the same:

* grayscale, palette, 16-bit and 4-channel (BGRA) files become 3-channel uint8 BGR
  (OpenCV's ``IMREAD_COLOR`` conversion: gray replicated, palette expanded, 16-bit values
  shifted right by 8, alpha dropped); user arrays and PIL images (:func:`load_bgr_image`)
  follow the same rules, written out in :mod:`ssd.data.pixels`;
* EXIF orientation flags are ignored (``IMREAD_IGNORE_ORIENTATION``): annotation boxes refer to
  the stored pixels, which is what the annotation's recorded image size describes. When the
  caller passes the annotation's size and it disagrees with the decoded size, a
  :class:`~ssd.data.errors.BadSampleError` names the file (and the EXIF flag when there is one),
  so a rotation can never silently move pixels away from their boxes;
* a missing, unreadable, empty or undecodable file raises an error naming the file and the id.
"""

from __future__ import annotations

import os
import struct
import warnings
from typing import Any, Sequence, Union

import cv2
import numpy as np

from .errors import BadSampleError, DataWarning, MissingFileError, describe
from .pixels import to_bgr_uint8

PathLike = Union[str, "os.PathLike[str]"]

# Decode flags: colour (3-channel uint8 BGR) and the stored pixel layout.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION

_ORIENTATION_TEXT = {
    2: "mirrored", 3: "rotated 180 degrees", 4: "flipped vertically",
    5: "transposed", 6: "rotated 90 degrees", 7: "transversed", 8: "rotated 270 degrees",
}


def read_image(path: PathLike, sample_id: Any = None,
               expected_size: Sequence[int] | None = None) -> np.ndarray:
    """Read an image file as a ``[H, W, 3]`` uint8 BGR array (the stored pixel layout).

    Args:
        path: the image file.
        sample_id: the dataset id, only used in error messages.
        expected_size: ``(width, height)`` the annotation records; ``None`` or a zero entry
            skips the check.

    Raises:
        MissingFileError: the file does not exist.
        BadSampleError: unreadable, empty, not a decodable image, or the wrong size.
    """
    where = describe(path, sample_id)
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {where}", path=str(path),
                               sample_id=sample_id) from None
    except OSError as e:
        raise BadSampleError(f"cannot read image {where}: {e.strerror or e}", path=str(path),
                             sample_id=sample_id) from e
    if data.size == 0:
        raise BadSampleError(f"image file is empty: {where}", path=str(path), sample_id=sample_id)
    img = cv2.imdecode(data, IMREAD_FLAGS)
    if img is None:
        raise BadSampleError(f"cannot decode image {where}: the file is corrupt, truncated or "
                             "not an image format OpenCV reads", path=str(path),
                             sample_id=sample_id)
    img = to_bgr_uint8(img, order="bgr", what=where)
    orientation = exif_orientation(data)
    height, width = img.shape[:2]
    if expected_size is not None and all(int(s) > 0 for s in expected_size):
        exp_w, exp_h = (int(s) for s in expected_size)
        if (exp_w, exp_h) != (width, height):
            msg = (f"image {where} is {width}x{height} (width x height) but its annotation "
                   f"records {exp_w}x{exp_h}")
            if orientation > 1:
                msg += (f"; the file carries an EXIF orientation flag ({orientation}: "
                        f"{_ORIENTATION_TEXT.get(orientation, 'unknown')}), so the boxes were "
                        "probably drawn on the rotated view. Re-save the image with the "
                        "rotation applied (e.g. PIL.ImageOps.exif_transpose) or fix the "
                        "annotation")
            else:
                msg += "; the image and its annotation do not belong together"
            raise BadSampleError(msg, path=str(path), sample_id=sample_id)
        if orientation in (5, 6, 7, 8) and (exp_w, exp_h) != (height, width):
            return img  # the recorded size matches only the stored layout: nothing ambiguous
    if orientation > 1:
        # Unique message per file: the default warning filter shows it once per file.
        warnings.warn(f"{where}: EXIF orientation flag {orientation} "
                      f"({_ORIENTATION_TEXT.get(orientation, 'unknown')}) is ignored; the "
                      "annotation is taken to refer to the stored pixels", DataWarning,
                      stacklevel=2)
    return img


def load_bgr_image(image: Any) -> tuple[np.ndarray, str | None]:
    """A user's image as ``[H, W, 3]`` uint8 BGR plus its path (``None`` unless it was one).

    Torch-free (the ONNX predictor uses it too). Accepts:

    * a file path: read by :func:`read_image`, like dataset images;
    * a numpy array in **RGB(A)** order, ``[H, W]``, ``[H, W, 1]``, ``[H, W, 2]`` (gray +
      alpha), ``[H, W, 3]`` or ``[H, W, 4]``, of any numeric dtype;
    * a PIL image of any mode: ``1``, ``L``, ``LA``, ``RGB``, ``RGBA``, ``I``, ``I;16*`` and
      ``F`` keep their pixel values (so 16-bit pictures lose their low byte exactly as the
      same file read from disk does); every other mode (``P``, ``PA``, ``CMYK``, ``YCbCr``,
      ``LAB``, ``HSV``, ``RGBX``, ...) goes through PIL's own ``convert("RGB")``.

    Arrays and PIL pixel values follow :mod:`ssd.data.pixels` (the rules for dtypes, value
    ranges and channels).

    Raises:
        FileNotFoundError, BadSampleError: a bad file (named).
        ValueError: a wrong shape, no pixels, NaN/infinite or out-of-range values.
        TypeError: not a path, array or PIL image (tensors included), or a non-numeric dtype.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        return read_image(path), path
    if isinstance(image, np.ndarray):
        return to_bgr_uint8(image, order="rgb", what="image array"), None
    if _is_pil_image(image):
        return to_bgr_uint8(pil_to_array(image), order="rgb",
                            what=f"PIL image (mode {image.mode})"), None
    if type(image).__module__.split(".")[0] == "torch":
        raise TypeError("pass images as RGB numpy arrays [H, W, 3], PIL images or file paths, "
                        "not tensors")
    raise TypeError(f"unsupported image type {type(image).__name__}: pass a file path, an RGB "
                    "numpy array [H, W, 3] or a PIL image")


# PIL modes whose arrays the pixel rules read directly (values kept, 16-bit included).
_PIL_DIRECT_MODES = frozenset({"1", "L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16L",
                               "I;16B", "I;16N"})


def _is_pil_image(image: Any) -> bool:
    return type(image).__module__.split(".")[0] == "PIL" and hasattr(image, "mode")


def pil_to_array(image: Any) -> np.ndarray:
    """A PIL image's pixels as an RGB(A)/gray numpy array for :func:`to_bgr_uint8`."""
    mode = str(image.mode)
    if mode not in _PIL_DIRECT_MODES:
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as e:
            raise ValueError(f"PIL image mode {mode!r} cannot be converted to RGB: {e}") from e
    return np.asarray(image)


def exif_orientation(data: Union[bytes, np.ndarray]) -> int:
    """The EXIF orientation tag (1-8) of JPEG file bytes; 0 when absent or unreadable."""
    buf = data[:262144].tobytes() if isinstance(data, np.ndarray) else bytes(data[:262144])
    if buf[:2] != b"\xff\xd8":
        return 0
    pos = 2
    try:
        while pos + 4 <= len(buf):
            if buf[pos] != 0xFF:
                return 0
            marker = buf[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in (0xD9, 0xDA):  # end of image / start of scan: no more headers
                return 0
            (length,) = struct.unpack(">H", buf[pos + 2:pos + 4])
            if marker == 0xE1 and buf[pos + 4:pos + 10] == b"Exif\x00\x00":
                return _tiff_orientation(buf[pos + 10:pos + 2 + length])
            pos += 2 + length
    except (struct.error, IndexError):
        return 0
    return 0


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 0
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        entry = ifd + 2 + 12 * k
        tag, typ = struct.unpack(order + "HH", tiff[entry:entry + 4])
        if tag == 0x0112 and typ == 3:  # Orientation, SHORT
            (value,) = struct.unpack(order + "H", tiff[entry + 8:entry + 10])
            return int(value) if 1 <= value <= 8 else 0
    return 0
