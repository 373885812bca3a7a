"""One rule set that turns any image array into ``[H, W, 3]`` uint8 BGR (torch-free).

Dataset files (:func:`~ssd.data.image_io.read_image`, BGR order from OpenCV) and user images
(:func:`~ssd.data.image_io.load_bgr_image`, RGB order) go through :func:`to_bgr_uint8`, so an
array and the same picture saved as a file give the network the same pixels. The rules follow
what OpenCV's ``IMREAD_COLOR`` does to a file:

Pixel values (by dtype):

* ``uint8``: as is.
* ``bool``: ``True`` is 255, ``False`` 0 (a 1-bit PNG).
* ``uint16``: the high byte (``value >> 8``), as OpenCV reads a 16-bit PNG.
* other integer types (``int8``, ``int16``, ``int32``, ``int64``, ``uint32``, ``uint64``):
  the values decide the scale, since these types carry no scale of their own. Every value in
  0..255: taken as 8-bit values; else every value in 0..65535: taken as 16-bit values (high
  byte). Negative values or values above 65535 are an error. (A dark 16-bit picture whose
  values all stay below 256 is therefore read as 8-bit: pass it as ``uint16`` to be exact.)
* floating point: NaN or infinite values are an error. The largest value decides the scale
  (matplotlib's convention): at most 1.0 means [0, 1] (multiplied by 255), above 1.0 means
  [0, 255]. Values are rounded to the nearest integer; anything that does not round into
  0..255 (a normalised or mean-subtracted image, for example) is an error.
* anything else (complex, object, strings...) is a :class:`TypeError`.

Channels (the last axis; ``[H, W]`` is grayscale):

* 1 channel: gray, replicated into the three colour channels;
* 2 channels: gray + alpha (PIL's ``LA``): alpha dropped, gray replicated;
* 3 channels: colour in the given order (RGB for user arrays, BGR for OpenCV's);
* 4 channels: colour + alpha: alpha dropped (not composited), as ``IMREAD_COLOR`` does.

Any other shape, and images with no pixels, are a :class:`ValueError` naming the shape.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_image_shape", "pixels_to_uint8", "to_bgr_uint8"]

_ORDERS = ("rgb", "bgr")


def check_image_shape(shape: tuple[int, ...], what: str = "image") -> None:
    """Raise :class:`ValueError` unless ``shape`` is ``[H, W]`` or ``[H, W, 1|2|3|4]`` with
    ``H, W > 0`` (the message names ``what`` and hints at channels-first arrays)."""
    shape = tuple(int(s) for s in shape)
    ok_rank = len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 2, 3, 4))
    if not ok_rank:
        hint = ""
        if len(shape) == 3 and shape[0] in (1, 3, 4):
            hint = " (it looks channels-first: transpose it to [H, W, C])"
        raise ValueError(f"{what} has shape {list(shape)}: expected [H, W] (gray) or "
                         f"[H, W, C] with C = 1 (gray), 2 (gray + alpha), 3 (colour) or "
                         f"4 (colour + alpha){hint}")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {list(shape)}): it has no pixels")


def pixels_to_uint8(arr: np.ndarray, what: str = "image") -> np.ndarray:
    """Any pixel dtype -> uint8 of the same shape, by the module's dtype rules.

    Raises:
        ValueError: NaN/infinite values, or values outside what the dtype's rule accepts.
        TypeError: a dtype that is not a number (complex, object, strings...).
    """
    dt = arr.dtype
    if not dt.isnative:
        arr = arr.astype(dt.newbyteorder("="))
        dt = arr.dtype
    if dt == np.uint8:
        return arr
    if dt == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if dt == np.uint16:
        return (arr >> 8).astype(np.uint8)
    if dt.kind in "iu":
        return _integers_to_uint8(arr, what)
    if dt.kind == "f":
        return _floats_to_uint8(arr, what)
    raise TypeError(f"{what} has pixel type {dt}: pass numbers (uint8, uint16, other "
                    "integers, bool or float)")


def _integers_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"{what} ({arr.dtype}) has negative pixel values (min {lo}): "
                         "integer images hold values in 0..255 (8-bit) or 0..65535 (16-bit)")
    if hi <= 255:
        return arr.astype(np.uint8)
    if hi <= 65535:
        return (arr >> 8).astype(np.uint8)
    raise ValueError(f"{what} ({arr.dtype}) has pixel values above 65535 (max {hi}): "
                     "integer images hold values in 0..255 (8-bit) or 0..65535 (16-bit); "
                     "scale it to uint8 or uint16 first")


def _floats_to_uint8(arr: np.ndarray, what: str) -> np.ndarray:
    # float32 arithmetic is exact enough here (an 8-bit step is 2**-8, float32 resolves 2**-24)
    a = arr.astype(np.float64 if arr.dtype.itemsize > 4 else np.float32, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(a.size - finite.sum()) - n_nan
        raise ValueError(f"{what} ({arr.dtype}) has {n_nan} NaN and {n_inf} infinite pixel "
                         "value(s): every pixel must be a finite number")
    lo, hi = float(a.min()), float(a.max())
    scale = 255.0 if hi <= 1.0 else 1.0
    scaled = np.rint(a * scale)
    if scaled.min() < 0 or scaled.max() > 255:
        raise ValueError(f"{what} ({arr.dtype}) has pixel values in [{lo:g}, {hi:g}]: float "
                         "images must hold values in [0, 1] or in [0, 255] (not normalised "
                         "or mean-subtracted ones)")
    return scaled.astype(np.uint8)


def to_bgr_uint8(img: np.ndarray, order: str = "bgr", what: str = "image") -> np.ndarray:
    """Any image array -> ``[H, W, 3]`` uint8 BGR (contiguous), by the module's rules.

    Args:
        img: ``[H, W]`` or ``[H, W, C]`` (``C`` in 1..4) of any numeric dtype.
        order: colour order of 3- and 4-channel input, ``'bgr'`` (OpenCV) or ``'rgb'``
            (user arrays: matplotlib, PIL).
        what: names the image in error messages.
    """
    if order not in _ORDERS:
        raise ValueError(f"order must be 'rgb' or 'bgr', not {order!r}")
    img = np.asarray(img)
    check_image_shape(img.shape, what)
    img = pixels_to_uint8(img, what)
    if img.ndim == 2:
        img = img[:, :, None]
    channels = img.shape[2]
    if channels <= 2:  # gray (+ alpha)
        return np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    color = img[:, :, :3]
    if order == "rgb":
        color = color[:, :, ::-1]
    return np.ascontiguousarray(color)
