"""SSD's training augmentation (ssd.pytorch's SSDAugmentation, with the crop rule fixed), fast.

The same random operations as ssd.pytorch, in its order: photometric distortion, expand
(zoom out), random sample crop, mirror, resize, mean subtraction. What differs is how the
pixels are computed, not what is drawn:

* all geometry (expand canvas, crop patch, mirror) is decided first from the image size and
  the boxes; then only the pixels that end up in the patch are touched. The expanded canvas
  is never built: the patch is cut from the image and padded with the mean where it reaches
  into the virtual canvas (``cv2.copyMakeBorder``);
* photometric operations run on uint8 pixels (values saturate at 0 and 255 after each stage,
  where ssd.pytorch's float32 pipeline let them run out of range): brightness and a contrast
  that directly follows it are one affine map ``(x + delta) * alpha`` (``cv2.addWeighted``),
  saturated once; saturation and hue are applied in OpenCV's 8-bit full-range HSV (hue 0-255
  for 0-360 degrees, so the +-18 degree hue delta is +-13 units, rounded to whole units of
  1.41 degrees); all are pointwise, so applying them to the patch instead of the whole image
  changes nothing. The mean-filled canvas is not distorted, as in
  ssd.pytorch;
* one resize of the uint8 patch, then one conversion to float32 with the mean subtracted.

The crop follows the Caffe SSD rule that ssd.pytorch meant to implement: a mode is drawn
uniformly from whole image, min IoU 0.1/0.3/0.5/0.7/0.9, or any patch; up to 50 patches are
tried per mode (sides uniform in [0.3, 1] of the image's, aspect h/w in [0.5, 2]); a patch is
accepted when at least one ground-truth box has an IoU with it inside the mode's
``[min, max]`` range and at least one box centre lies strictly inside it; after 50 misses a
new mode is drawn. Boxes whose centre is inside are kept, cut to the patch; boxes left with
no area are dropped. An image without boxes is never cropped.

Randomness comes from a ``numpy.random.Generator`` per transform and process, never from the
global ``np.random`` state; see :class:`SSDAugmentation` for how it is seeded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import get_worker_info

from ..config import MEANS
from .transforms import subtract_mean

# (min IoU, max IoU) per crop mode; None = keep the whole image; (None, None) = any patch.
CROP_MODES: tuple[tuple[float | None, float | None] | None, ...] = (
    None, (0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, None))
CHANNEL_PERMUTATIONS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
_IDENTITY = np.arange(256, dtype=np.float64)


@dataclass(frozen=True)
class PhotometricParams:
    """One draw of the photometric distortion; ``None`` fields are not applied."""

    brightness: float | None = None  # added to every channel
    contrast: float | None = None  # multiplies every channel
    contrast_first: bool = True  # contrast before the HSV part (else after it)
    saturation: float | None = None  # multiplies S
    hue: float | None = None  # degrees added to H (wrapping)
    channel_order: tuple[int, int, int] | None = None  # output channel c = input order[c]


@dataclass(frozen=True)
class ExpandParams:
    """The zoom-out canvas: ``width x height`` pixels, image pasted at ``(left, top)``."""

    width: int
    height: int
    left: int
    top: int


@dataclass(frozen=True)
class CropParams:
    """The crop decision: ``mode`` from :data:`CROP_MODES`; ``rect`` ``(x0, y0, x1, y1)`` in
    (expanded) image pixels or ``None`` for the whole image; ``keep[i]`` whether box ``i``'s
    centre lies in the patch."""

    mode: tuple[float | None, float | None] | None
    rect: tuple[int, int, int, int] | None
    keep: np.ndarray


@dataclass(frozen=True)
class AugmentParams:
    photometric: PhotometricParams
    expand: ExpandParams | None
    crop: CropParams
    mirror: bool


def _saturate(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


class PhotometricDistort:
    """Random brightness, contrast, saturation, hue and channel swap on uint8 BGR images.

    Each of brightness (delta uniform in ``+-brightness_delta``), contrast (factor uniform in
    ``contrast_range``, placed before or after the HSV part with probability 1/2), saturation
    (factor in ``saturation_range``), hue (``+-hue_delta`` degrees) and a channel swap (one of
    the 6 orders, identity included) is applied with probability ``p``.
    """

    def __init__(self, brightness_delta: float = 32.0,
                 contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5),
                 hue_delta: float = 18.0, p: float = 0.5) -> None:
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta
        self.p = p

    def sample(self, rng: np.random.Generator) -> PhotometricParams:
        u = rng.random(11)
        p = self.p
        order = CHANNEL_PERMUTATIONS[min(int(u[10] * 6), 5)]
        return PhotometricParams(
            brightness=(2 * u[1] - 1) * self.brightness_delta if u[0] < p else None,
            contrast_first=bool(u[2] < 0.5),
            contrast=_lerp(self.contrast_range, u[4]) if u[3] < p else None,
            saturation=_lerp(self.saturation_range, u[6]) if u[5] < p else None,
            hue=(2 * u[8] - 1) * self.hue_delta if u[7] < p else None,
            channel_order=order if u[9] < p and order != (0, 1, 2) else None,
        )

    @staticmethod
    def apply(image: np.ndarray, params: PhotometricParams) -> np.ndarray:
        """Distort a ``[H, W, 3]`` uint8 BGR image; returns a new array (or ``image`` itself
        when nothing applies). The input is never modified."""
        hsv = params.saturation is not None or params.hue is not None
        # Brightness, and contrast when it comes first (or nothing separates the two), are one
        # affine map (x + b) * c, saturated once at the end like ssd.pytorch's float values.
        contrast_after = params.contrast is not None and not params.contrast_first and hsv
        alpha, beta = 1.0, 0.0
        if params.brightness is not None:
            beta = float(params.brightness)
        if params.contrast is not None and not contrast_after:
            alpha, beta = float(params.contrast), beta * float(params.contrast)
        out = image
        if alpha != 1.0 or beta != 0.0:
            out = cv2.addWeighted(out, alpha, out, 0.0, beta)
        if hsv:
            out = cv2.cvtColor(out, cv2.COLOR_BGR2HSV_FULL)
            units = _hue_units(params.hue)
            if params.saturation is None:  # hue only: wrap-around uint8 add in place
                np.add(out[:, :, 0], np.uint8(units % 256), out=out[:, :, 0])
            else:
                table = np.empty((256, 1, 3), dtype=np.uint8)
                table[:, 0, 0] = (np.arange(256) + units) % 256
                table[:, 0, 1] = _saturate(_IDENTITY * params.saturation)
                table[:, 0, 2] = np.arange(256)
                out = cv2.LUT(out, table)
            out = cv2.cvtColor(out, cv2.COLOR_HSV2BGR_FULL)
        if contrast_after:
            out = cv2.addWeighted(out, float(params.contrast), out, 0.0, 0.0)
        if params.channel_order is not None:
            out = permute_channels(out, params.channel_order)
        return out

    def __call__(self, image: np.ndarray, boxes: Any = None, labels: Any = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, Any, Any]:
        rng = rng if rng is not None else np.random.default_rng()
        return self.apply(_as_uint8_bgr(image), self.sample(rng)), boxes, labels


def permute_channels(image: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """``image[:, :, order]`` for a ``[H, W, 3]`` array, as a new contiguous array (OpenCV
    copies channels several times faster than NumPy fancy indexing does)."""
    if tuple(order) == (2, 1, 0):
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    out = np.empty(image.shape, dtype=image.dtype)
    cv2.mixChannels([image], [out], [order[0], 0, order[1], 1, order[2], 2])
    return out


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _hue_units(hue: float | None) -> int:
    """Degrees -> OpenCV full-range 8-bit hue units (256 per turn)."""
    return 0 if hue is None else int(np.rint(hue * 256.0 / 360.0))


class Expand:
    """Zoom out with probability ``p``: a canvas ``ratio`` (uniform in ``[1, max_ratio]``)
    times the image, the image at a uniform random offset, the rest filled with the mean."""

    def __init__(self, max_ratio: float = 4.0, p: float = 0.5) -> None:
        self.max_ratio = max_ratio
        self.p = p

    def sample(self, height: int, width: int,
               rng: np.random.Generator) -> ExpandParams | None:
        u = rng.random(4)
        if u[0] >= self.p:
            return None
        ratio = 1.0 + (self.max_ratio - 1.0) * u[1]
        left = u[2] * (width * ratio - width)
        top = u[3] * (height * ratio - height)
        return ExpandParams(width=int(width * ratio), height=int(height * ratio),
                            left=int(left), top=int(top))


def iou_with_rects(boxes: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """IoU of ``boxes`` ``[n, 4]`` with each of ``rects`` ``[T, 4]`` (corners) -> ``[T, n]``."""
    lt = np.maximum(rects[:, None, :2], boxes[None, :, :2])
    rb = np.minimum(rects[:, None, 2:], boxes[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    area_r = (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])
    union = area_b[None, :] + area_r[:, None] - inter
    return inter / np.maximum(union, np.finfo(np.float64).tiny)


class RandomSampleCrop:
    """SSD's random patch sampler with the Caffe acceptance rule (see the module docstring).

    Args:
        modes: ``(min_iou, max_iou)`` pairs (``None`` bounds are open) or ``None`` (whole
            image), drawn uniformly.
        max_trials: patches tried per drawn mode.
        min_scale: smallest patch side as a fraction of the image side.
        max_aspect: largest ``h/w`` (and ``w/h``) of a patch.
        max_rounds: modes drawn before giving up and keeping the whole image (a safety net;
            the whole-image mode ends the loop with probability 1/7 per round anyway).
    """

    def __init__(self, modes: Sequence[Any] = CROP_MODES, max_trials: int = 50,
                 min_scale: float = 0.3, max_aspect: float = 2.0,
                 max_rounds: int = 1000) -> None:
        self.modes = tuple(modes)
        self.max_trials = max_trials
        self.min_scale = min_scale
        self.max_aspect = max_aspect
        self.max_rounds = max_rounds

    def sample(self, boxes: np.ndarray, width: int, height: int,
               rng: np.random.Generator) -> CropParams:
        """Choose a mode and a patch for ``boxes`` ``[n, 4]`` in pixels of a ``width x height``
        image. The ``max_trials`` tries of one mode are drawn at once and the first acceptable
        one is taken, which is the same distribution as trying them one after another."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n = len(boxes)
        if n == 0:
            return CropParams(None, None, np.zeros(0, dtype=bool))
        centers = (boxes[:, :2] + boxes[:, 2:]) / 2
        t = self.max_trials
        for _ in range(self.max_rounds):
            mode = self.modes[int(rng.integers(len(self.modes)))]
            if mode is None:
                break
            lo = -np.inf if mode[0] is None else mode[0]
            hi = np.inf if mode[1] is None else mode[1]
            u = rng.random((4, t))
            w = width * (self.min_scale + (1.0 - self.min_scale) * u[0])
            h = height * (self.min_scale + (1.0 - self.min_scale) * u[1])
            left = u[2] * (width - w)
            top = u[3] * (height - h)
            rects = np.stack([left, top, left + w, top + h], axis=1).astype(np.int64)
            ok = (h >= w / self.max_aspect) & (h <= w * self.max_aspect)
            iou = iou_with_rects(boxes, rects.astype(np.float64))
            ok &= ((iou >= lo) & (iou <= hi)).any(axis=1)
            inside = ((rects[:, None, 0] < centers[None, :, 0])
                      & (rects[:, None, 1] < centers[None, :, 1])
                      & (rects[:, None, 2] > centers[None, :, 0])
                      & (rects[:, None, 3] > centers[None, :, 1]))
            ok &= inside.any(axis=1)
            if ok.any():
                k = int(np.argmax(ok))
                rect = tuple(int(v) for v in rects[k])
                return CropParams(mode, rect, inside[k].copy())  # type: ignore[arg-type]
        return CropParams(None, None, np.ones(n, dtype=bool))

    @staticmethod
    def cut_boxes(boxes: np.ndarray, labels: np.ndarray,
                  crop: CropParams) -> tuple[np.ndarray, np.ndarray]:
        """Keep the boxes whose centre is in the patch, cut them to it, shift them to patch
        coordinates (pixels), and drop those left with no area."""
        if crop.rect is None:
            return boxes, labels
        x0, y0, x1, y1 = crop.rect
        b = boxes[crop.keep].copy()
        b[:, :2] = np.maximum(b[:, :2], (x0, y0)) - (x0, y0)
        b[:, 2:] = np.minimum(b[:, 2:], (x1, y1)) - (x0, y0)
        area = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        return b[area], labels[crop.keep][area]

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Crop ``image`` with ``boxes`` in pixels (ssd.pytorch's convention for this step)."""
        rng = rng if rng is not None else np.random.default_rng()
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels)
        crop = self.sample(boxes, w, h, rng)
        if crop.rect is None:
            return image, boxes, labels
        x0, y0, x1, y1 = crop.rect
        b, lab = self.cut_boxes(boxes, labels, crop)
        return image[y0:y1, x0:x1], b, lab


class SSDAugmentation:
    """ssd.pytorch's training transform: ``(img, boxes, labels) -> (img, boxes, labels)``.

    Input: a ``[H, W, 3]`` BGR image (uint8; float input is rounded and saturated to uint8
    first), boxes ``[n, 4]`` as ``(x1, y1, x2, y2)`` relative to the image ([0, 1]), labels
    ``[n]``. Output: float32 ``[size, size, 3]`` BGR minus ``mean``, boxes ``[m, 4]`` float32
    in [0, 1] relative to the output (each with positive area), labels ``[m]`` float32. The
    dataset then reorders the image to RGB (model input, LAYOUT.md).

    Randomness: ``rng`` if given, else this transform's own ``numpy.random.Generator``, created
    on first use in each process: in a DataLoader worker from the worker's seed
    (``torch.utils.data.get_worker_info().seed``, which differs per worker and derives from the
    loader's generator, so a seeded loader is reproducible and workers draw differently) mixed
    with ``seed``; in the main process from ``seed``, or from ``torch.initial_seed()`` when
    ``seed`` is None (so ``torch.manual_seed`` makes ``num_workers=0`` runs reproducible).
    :meth:`reseed` restarts the stream; :meth:`state_dict`/:meth:`load_state_dict` save and
    restore the main-process stream (for exact resumption with ``num_workers=0``).
    """

    def __init__(self, size: int = 300, mean: Sequence[float] = MEANS,
                 seed: int | None = None, *, expand_max_ratio: float = 4.0,
                 crop_modes: Sequence[Any] = CROP_MODES, max_trials: int = 50) -> None:
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.seed = seed
        self.photometric = PhotometricDistort()
        self.expand = Expand(expand_max_ratio)
        self.crop = RandomSampleCrop(crop_modes, max_trials)
        # The canvas fill as uint8 (exact for the integer means SSD uses).
        self._fill = tuple(float(min(max(round(m), 0), 255)) for m in self.mean)
        self._rng: np.random.Generator | None = None
        self._rng_key: Any = None

    # --- randomness ----------------------------------------------------------------------
    @staticmethod
    def _process_key() -> tuple[int, int | None]:
        info = get_worker_info()
        return os.getpid(), None if info is None else int(info.seed)

    def generator(self) -> np.random.Generator:
        """This process's generator (created on first use, see the class docstring)."""
        key = self._process_key()
        if self._rng is None or self._rng_key != key:
            own = 0 if self.seed is None else int(self.seed)
            if key[1] is not None:
                entropy: Any = [key[1], own]
            elif self.seed is not None:
                entropy = own
            else:
                entropy = torch.initial_seed()
            self._rng = np.random.default_rng(np.random.SeedSequence(entropy))
            self._rng_key = key
        return self._rng

    def reseed(self, seed: int | None) -> None:
        """Set ``seed`` and restart the random stream on next use."""
        self.seed = seed
        self._rng = None

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "rng": self.generator().bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self._rng, self._rng_key = rng, self._process_key()

    # --- the transform -------------------------------------------------------------------
    def sample(self, height: int, width: int, boxes: np.ndarray,
               rng: np.random.Generator | None = None) -> AugmentParams:
        """Draw every random decision for an image of ``height x width`` with ``boxes``
        ``[n, 4]`` relative to it."""
        rng = rng if rng is not None else self.generator()
        photometric = self.photometric.sample(rng)
        expand = self.expand.sample(height, width, rng)
        px = _to_canvas_pixels(boxes, width, height, expand)
        cw, ch = (width, height) if expand is None else (expand.width, expand.height)
        crop = self.crop.sample(px, cw, ch, rng)
        mirror = bool(rng.random() < 0.5)
        return AugmentParams(photometric, expand, crop, mirror)

    def apply(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
              params: AugmentParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply drawn ``params`` (see :meth:`sample`)."""
        image = _as_uint8_bgr(image)
        height, width = image.shape[:2]
        expand = params.expand
        ox, oy = (0, 0) if expand is None else (expand.left, expand.top)
        cw, ch = (width, height) if expand is None else (expand.width, expand.height)
        boxes = _to_canvas_pixels(boxes, width, height, expand)
        labels = np.asarray(labels, dtype=np.float32).reshape(-1)
        boxes, labels = self.crop.cut_boxes(boxes, labels, params.crop)
        x0, y0, x1, y1 = params.crop.rect or (0, 0, cw, ch)

        # Pixels: only the part of the image inside the patch, padded with the mean.
        ix0, iy0 = max(x0, ox), max(y0, oy)
        ix1, iy1 = min(x1, ox + width), min(y1, oy + height)
        if ix1 > ix0 and iy1 > iy0:
            patch = self.photometric.apply(image[iy0 - oy:iy1 - oy, ix0 - ox:ix1 - ox],
                                           params.photometric)
            pads = (iy0 - y0, y1 - iy1, ix0 - x0, x1 - ix1)
            if any(pads):
                patch = cv2.copyMakeBorder(patch, *pads, cv2.BORDER_CONSTANT,
                                           value=(*self._fill, 0.0))
        else:  # unreachable with boxes (a kept centre is in the image); kept for safety
            patch = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
            patch[:] = np.asarray(self._fill, dtype=np.uint8)
        out = cv2.resize(patch, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        pw, ph = x1 - x0, y1 - y0
        boxes = boxes / np.array([pw, ph, pw, ph], dtype=np.float64)
        if params.mirror:
            out = cv2.flip(out, 1)
            boxes = np.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]],
                             axis=1)
        boxes = np.clip(boxes, 0.0, 1.0).astype(np.float32)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return subtract_mean(out, self.mean), boxes[ok], labels[ok]

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None,
                 labels: np.ndarray | None = None,
                 rng: np.random.Generator | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64)
        boxes = boxes.reshape(-1, 4)
        labels = np.zeros(len(boxes)) if labels is None else labels
        params = self.sample(image.shape[0], image.shape[1], boxes, rng)
        return self.apply(image, boxes, labels, params)

    def __repr__(self) -> str:
        return f"SSDAugmentation(size={self.size}, mean={self.mean}, seed={self.seed})"


def _to_canvas_pixels(boxes: np.ndarray, width: int, height: int,
                      expand: ExpandParams | None) -> np.ndarray:
    """Relative boxes -> pixels of the (expanded) canvas, float64 ``[n, 4]``."""
    px = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * (width, height, width, height)
    if expand is not None:
        px += (expand.left, expand.top, expand.left, expand.top)
    return px


def _as_uint8_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = _saturate(image)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a [H, W, 3] BGR image, got shape {image.shape}")
    return image
