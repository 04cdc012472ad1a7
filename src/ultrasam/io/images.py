"""Images of any common form -> one RGB uint8 array, and the :class:`LoadedImage` every reader
returns (the file-format dispatcher ``load_image`` is in :mod:`ultrasam.io.load`; the DICOM and
volume readers import this module, never the dispatcher, so the readers form no cycle).

Conversion rules of :func:`to_rgb_uint8` (the model sees HxWx3 uint8 RGB, nothing else):

* **Shape.** ``HxW`` and ``HxWx1`` are grey and replicated to 3 channels; ``HxWx3`` is taken as
  RGB (or converted from ``color_space``); ``HxWx4`` is RGBA (see alpha below). Any other number
  of dimensions or channels is a ``ValueError`` (a ``3xHxW`` array gets a hint that it looks
  channels-first). Both sides must be at least :data:`MIN_SIDE` (2) pixels: a 1-pixel side has no
  spatial extent to segment, and an empty array has nothing at all.
* **bool**: ``False -> 0``, ``True -> 255`` (a binary image shown as black/white).
* **uint8**: unchanged.
* **Other integers (uint16, int16, int32, ...)**: scaled by the image's *own* min/max to 0..255
  (``round(255 * (v - min) / (max - min))``). Why min-max and not full-range: 16-bit medical and
  ultrasound exports usually fill only 10-12 of their 16 bits, so a full-range rule would return
  an almost black image; the model needs contrast, not absolute values. The price: two frames of
  one recording may be scaled differently. A constant image becomes all 0.
* **Floats**: NaN or +-inf anywhere is a ``ValueError`` (a non-finite pixel means something went
  wrong upstream; mapping it silently would hide that). Values inside ``[0, 1]`` are treated as
  normalised intensities and multiplied by 255 (so a dim [0, 0.5] image stays dim); any other
  range is min-max scaled as for integers.
* **Alpha** (RGBA, LA, PA): composited on **black**, ``rgb * alpha / 255``. Ultrasound is shown on
  black, transparent pixels are "no data", and the colour values hidden under alpha 0 are often
  garbage; an opaque alpha channel gives exactly the dropped-alpha result.
* **Colour spaces** of arrays: ``color_space="RGB"`` (default), ``"BGR"`` (OpenCV order), or
  ``"YBR_FULL"`` / ``"YBR_FULL_422"`` (DICOM's full-range YCbCr, 4:2:2 already upsampled by the
  decoder), converted with the ITU-R BT.601 full-range equations DICOM uses (PS3.3 C.7.6.3.1.2).
* **PIL images** are converted by mode: ``1`` as bool; ``L``/``RGB``/``RGBA`` directly; ``P``
  through its palette (to RGBA when the palette has transparency, so alpha is composited as
  above); ``LA``/``La``/``PA`` as grey/colour + alpha; ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``,
  ``RGBX`` via Pillow's own conversion to RGB (CMYK is a naive conversion without ICC profile);
  ``I;16*``/``I`` (16/32-bit grey) by the integer rule; ``F`` by the float rule.

Non-numeric dtypes (object, strings, datetimes, structured) and complex arrays are a
``ValueError``; anything that is not a numpy array or PIL image is a ``TypeError``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Smallest accepted height and width in pixels.
MIN_SIDE = 2

_COLOR_SPACES = ("RGB", "BGR", "YBR_FULL", "YBR_FULL_422")


@dataclass
class LoadedImage:
    """An image ready for the model, with what is known about it.

    Attributes:
        rgb: H x W x 3 uint8, RGB order, C-contiguous.
        spacing_mm: physical pixel size ``(row_mm, col_mm)`` -- the height and width of one pixel
            in millimetres -- or ``None`` when the file carries no trustworthy calibration.
        warnings: human-readable notes about choices made while loading (default frame picked,
            calibration refused and why, ...). Empty when nothing needed saying.
        source: the file path as given, or ``"array"`` / ``"PIL.Image"`` for in-memory input.
        meta: format-specific details (``format``, ``frame``, ``n_frames``, ``slice``, ``axis``,
            ``shape``; for DICOM also ``calibration``, a :class:`ultrasam.io.dicom.Calibration`
            used by :func:`ultrasam.io.dicom.mask_area_mm2`).
    """

    rgb: np.ndarray
    spacing_mm: tuple[float, float] | None = None
    warnings: list[str] = field(default_factory=list)
    source: str = "array"
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- array conversion


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3):
        raise ValueError(
            f"image must be HxW or HxWxC, got an array with {len(shape)} dimensions "
            f"(shape {shape})")
    if 0 in shape:
        raise ValueError(f"image is empty (shape {shape})")
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        hint = (" -- it looks channels-first (CxHxW); transpose it to HxWxC"
                if shape[0] in (1, 3, 4) else "")
        raise ValueError(
            f"image must have 1, 3 or 4 channels, got {shape[2]} (shape {shape}){hint}")
    h, w = shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"image is too small: {h}x{w} pixels; both sides must be at least {MIN_SIDE}")


def _scale_to_uint8(a: np.ndarray) -> np.ndarray:
    """Apply the dtype rules (see module docstring); returns uint8 of the same shape."""
    kind = a.dtype.kind
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype == np.uint8:
        return a
    if kind == "c":
        raise ValueError(
            f"complex images are not supported (dtype {a.dtype}); pass np.abs(image) or its "
            "real part")
    if kind not in "iuf":
        raise ValueError(f"image has a non-numeric dtype {a.dtype}")
    if kind == "f":
        finite = np.isfinite(a)
        if not finite.all():
            bad = int(a.size - np.count_nonzero(finite))
            raise ValueError(
                f"image contains {bad} non-finite value(s) (NaN or inf); replace them first")
    lo, hi = float(a.min()), float(a.max())
    if kind == "f" and lo >= 0.0 and hi <= 1.0:
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    if hi == lo:
        return np.zeros(a.shape, np.uint8)
    scaled = (a.astype(np.float64) - lo) * (255.0 / (hi - lo))
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def ybr_full_to_rgb(ybr: np.ndarray) -> np.ndarray:
    """DICOM YBR_FULL (full-range BT.601 YCbCr, 8-bit) -> RGB, both H x W x 3 uint8."""
    y = ybr[..., 0].astype(np.float32)
    cb = ybr[..., 1].astype(np.float32) - 128.0
    cr = ybr[..., 2].astype(np.float32) - 128.0
    rgb = np.empty(ybr.shape, np.float32)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    return np.rint(rgb).clip(0, 255).astype(np.uint8)


def _composite_on_black(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.uint16) * alpha[..., None].astype(np.uint16)
    return ((out + 127) // 255).astype(np.uint8)


def pil_to_array(img: Any) -> np.ndarray:
    """PIL image -> numpy array whose dtype/channels `to_rgb_uint8` knows how to treat."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        img = img.convert("RGB")
    elif mode == "1":
        return np.array(img, dtype=bool)
    return np.array(img)


def to_rgb_uint8(image: Any, color_space: str = "RGB") -> np.ndarray:
    """Convert an image to H x W x 3 uint8 RGB by the rules of this module's docstring.

    Args:
        image: numpy array (HxW, HxWx1, HxWx3 or HxWx4) of a numeric dtype, or a PIL image.
        color_space: meaning of a 3-channel array: ``"RGB"``, ``"BGR"``, ``"YBR_FULL"`` or
            ``"YBR_FULL_422"``. Ignored for PIL images (their mode says it).

    Returns:
        H x W x 3 uint8, C-contiguous, never a view of ``image``.

    Raises:
        TypeError: ``image`` is neither a numpy array nor a PIL image.
        ValueError: unusable image (see module docstring) or unknown ``color_space``.
    """
    if color_space not in _COLOR_SPACES:
        raise ValueError(f"color_space must be one of {_COLOR_SPACES}, got {color_space!r}")
    if not isinstance(image, np.ndarray):
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a core dependency
            Image = None  # type: ignore[assignment]
        if Image is not None and isinstance(image, Image.Image):
            image = pil_to_array(image)
            color_space = "RGB"
        else:
            raise TypeError(
                f"image must be a numpy array or a PIL image, got {type(image).__name__}")
    a = np.asarray(image)
    if a.dtype.kind not in "biufc":
        raise ValueError(f"image has a non-numeric dtype {a.dtype}")
    _check_shape(a.shape)
    if a.ndim == 3 and a.shape[2] == 4:
        a8 = _scale_to_uint8(a)
        rgb = _composite_on_black(a8[..., :3], a8[..., 3])
    else:
        rgb = _scale_to_uint8(a)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    elif rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    elif color_space == "BGR":
        rgb = rgb[..., ::-1]
    elif color_space.startswith("YBR"):
        rgb = ybr_full_to_rgb(rgb)
    out = np.ascontiguousarray(rgb)
    if out is image or np.shares_memory(out, image):
        out = out.copy()
    return out
