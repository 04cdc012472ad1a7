"""Shared 2D readers for the dataset converters.

Every converter needs the same few things: read an image of whatever format the dataset ships
(PNG, JPEG, TIFF, GIF, BMP; 8- or 16-bit; palette; RGBA) as uint8, read a mask *as stored*
(palette indices stay indices, colours stay colours), turn it into booleans, pair files in a
human order, and say which file could not be read so the converter can ``writer.warn`` and go on::

    try:
        image = read_image(path)
    except UnreadableFile as e:
        writer.warn(e.path, e.reason)
        continue

Layouts returned: grey images are ``H x W`` uint8, colour images ``H x W x 3`` uint8 RGB. Masks
are ``H x W`` (grey, palette index, 16-bit label) or ``H x W x C`` (C = 3 RGB or 4 RGBA) in the
file's own dtype.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "UnreadableFile", "read_image", "read_mask", "to_uint8", "to_grey_if_uniform",
    "threshold", "nonzero", "colour_match", "resize_nearest", "natural_key", "natural_sorted",
    "find_dirs", "relative_source", "IMAGE_SUFFIXES",
]

#: Suffixes (lower case) the readers accept; PIL decides the real format from the bytes.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp"})

# A pixel counts as coloured when its channels differ by more than this: tinted B-mode displays
# (sepia/blue maps, e.g. BUS-UCLM) and JPEG chroma rounding stay well below it, Doppler does not.
_COLOUR_TOLERANCE = 48
# An image is kept in colour only when more than this fraction of its pixels are coloured, so a
# colour bar, a coloured caliper or a logo does not turn a B-mode scan into RGB (measured on real
# samples: MMOTU Doppler ~1%, B-mode scans with coloured text/bars <= 0.25%).
_COLOUR_FRACTION = 0.005
#: Largest image decoded, in pixels (read from the header before any pixel is decoded). The
#: largest ultrasound frames of the public datasets are about 2 megapixels; 64 MP (8000 x 8000)
#: leaves room for stitched panoramas while a header claiming 20000 x 20000 (a decompression
#: bomb, or a corrupt header) is refused as an unreadable file instead of allocating gigabytes.
#: It stays under PIL's own warning limit (89 MP), so PIL never warns first.
MAX_PIXELS = 64_000_000


class UnreadableFile(ValueError):
    """A file that exists but cannot be decoded (truncated, corrupt, unknown format).

    ``path``: the offending file; ``reason``: a one-line explanation for ``writer.warn``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def decode_array(source: Path | BinaryIO, name: str | Path, palette_as_rgb: bool = False
                 ) -> np.ndarray:
    """Decode the first frame of ``source`` (a path or a binary stream) with PIL.

    Palette images give their indices, or RGB colours when ``palette_as_rgb``; 1-bit images give
    bool. Raises :class:`UnreadableFile` naming ``name`` when the data cannot be decoded. Shared
    by the path readers here and the bytes readers of :mod:`._shapes` (archive members).
    """
    try:
        with Image.open(source) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise UnreadableFile(name, f"header claims {width} x {height} pixels, more than "
                                           f"the {MAX_PIXELS:,} accepted (decompression bomb "
                                           "or corrupt header)")
            img.seek(0)  # first frame of multi-frame GIF/TIFF
            img.load()
            mode = img.mode
            if mode == "P" or mode == "PA":
                return np.asarray(img.convert("RGB")) if palette_as_rgb else np.asarray(img)
            if mode == "1":
                return np.asarray(img.convert("L")) > 0
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                return np.asarray(img.convert("RGB"))
            return np.asarray(img)
    except UnreadableFile:
        raise
    except Image.DecompressionBombError as e:  # raised by Image.open itself past PIL's limit
        raise UnreadableFile(name, f"header claims too many pixels (decompression bomb or "
                                   f"corrupt header): {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            MemoryError) as e:
        # PIL raises OSError for truncated data, SyntaxError for some malformed headers and
        # DecompressionBombError (not an OSError) for huge headers under its own limit.
        raise UnreadableFile(name, f"cannot decode image: {type(e).__name__}: {e}") from e


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    return path


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Any-depth intensity array -> uint8 of the same shape.

    uint8 is returned unchanged; bool maps to {0, 255}; integers that already fit in 0..255 are
    cast; anything else (16-bit, float) is rescaled linearly from its [min, max] to [0, 255]
    (ultrasound 16-bit exports rarely use the full range, so a fixed shift would darken them).
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    a = np.nan_to_num(array.astype(np.float64))
    lo, hi = float(a.min(initial=0.0)), float(a.max(initial=0.0))
    if np.issubdtype(array.dtype, np.integer) and lo >= 0 and hi <= 255:
        return array.astype(np.uint8)
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def to_grey_if_uniform(rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` uint8 -> ``H x W`` when the channels (nearly) agree, else unchanged.

    Grey scans saved as RGB (or as colour JPEG) become single-channel; Doppler boxes and coloured
    overlays keep the image in colour.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected H x W x 3, got shape {rgb.shape}")
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    if np.count_nonzero(spread > _COLOUR_TOLERANCE) > _COLOUR_FRACTION * spread.size:
        return rgb
    # Luma weights, as PIL's "L" conversion, so near-grey JPEG rounding is averaged out.
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def read_image(path: str | Path) -> np.ndarray:
    """Read an ultrasound image as ``H x W`` uint8 (grey) or ``H x W x 3`` uint8 (RGB).

    Palette images are expanded through their palette, alpha is dropped, 16-bit and float data
    are rescaled with :func:`to_uint8`, and colour is kept only when channels really differ
    (:func:`to_grey_if_uniform`). Raises ``FileNotFoundError`` for a missing file and
    :class:`UnreadableFile` for one that cannot be decoded.
    """
    path = _existing(path)
    return image_from_array(decode_array(path, path, palette_as_rgb=True), path)


def image_from_array(array: np.ndarray, name: str | Path) -> np.ndarray:
    """A decoded array (palette already expanded) as ``H x W`` or ``H x W x 3`` uint8: the
    channel, depth and grey rules of :func:`read_image`; UnreadableFile names ``name``."""
    if array.ndim == 3:
        if array.shape[2] == 1:
            array = array[..., 0]
        elif array.shape[2] == 2:  # LA: luminance + alpha
            array = array[..., 0]
        else:
            array = array[..., :3]
    array = to_uint8(array)
    if array.ndim == 3:
        array = to_grey_if_uniform(array)
    if array.ndim != 2 and not (array.ndim == 3 and array.shape[2] == 3):
        raise UnreadableFile(name, f"unexpected image layout {array.shape}")
    if array.size == 0:
        raise UnreadableFile(name, "image is empty")
    return np.ascontiguousarray(array)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask exactly as stored: ``H x W`` or ``H x W x C``, the file's own dtype.

    Palette (``P``) masks give their *indices* (the label codes), not colours; 1-bit masks give
    bool; RGB(A) masks give their channels. Raises :class:`UnreadableFile` when undecodable.
    """
    path = _existing(path)
    return mask_from_array(decode_array(path, path), path)


def mask_from_array(array: np.ndarray, name: str | Path) -> np.ndarray:
    """A decoded mask array, contiguous; UnreadableFile naming ``name`` when it is empty."""
    if array.size == 0:
        raise UnreadableFile(name, "mask is empty")
    return np.ascontiguousarray(array)


def _as_2d(mask: np.ndarray) -> np.ndarray:
    """Collapse a channel axis (RGB(A) masks) by taking the maximum colour channel."""
    if mask.ndim == 2:
        return mask
    if mask.ndim == 3:
        channels = mask[..., :3] if mask.shape[2] >= 3 else mask[..., :1]
        return channels.max(axis=2)
    raise ValueError(f"mask must be H x W or H x W x C, got shape {mask.shape}")


def threshold(mask: np.ndarray, level: float = 128) -> np.ndarray:
    """``H x W`` bool: pixels whose value (max over colour channels) is ``>= level``.

    Use for anti-aliased or JPEG-compressed masks (e.g. ``level=128`` for 0/255 masks). A bool
    mask (1-bit file) is already binary and is returned as is, whatever ``level``.
    """
    if mask.dtype == bool:
        return _as_2d(mask)
    return _as_2d(mask) >= level


def nonzero(mask: np.ndarray) -> np.ndarray:
    """``H x W`` bool: pixels where any colour channel is non-zero."""
    return _as_2d(mask) > 0


def colour_match(mask: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 0) -> np.ndarray:
    """``H x W`` bool: pixels of an ``H x W x 3(4)`` mask within ``tolerance`` of colour ``rgb``."""
    if mask.ndim != 3 or mask.shape[2] < 3:
        raise ValueError(f"colour_match needs an H x W x 3 mask, got shape {mask.shape}")
    diff = np.abs(mask[..., :3].astype(np.int16) - np.asarray(rgb, np.int16))
    return np.all(diff <= tolerance, axis=2)


def resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize an ``H x W`` bool/integer mask to ``shape`` = (height, width), nearest neighbour."""
    h, w = shape
    if mask.shape[:2] == (h, w):
        return mask
    src = mask.astype(np.uint8) if mask.dtype == bool else mask
    out = cv2.resize(src, (w, h), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool) if mask.dtype == bool else out


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str | Path) -> tuple[tuple[int, int | str], ...]:
    """Sort key ordering embedded numbers by value: ``img2`` < ``img10``; case-insensitive."""
    text = name.as_posix() if isinstance(name, Path) else str(name)
    parts = _DIGITS.split(text)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p != "")


def natural_sorted(items: Iterable[str | Path]) -> list:
    """``items`` sorted with :func:`natural_key` (ties broken by the plain string)."""
    return sorted(items, key=lambda p: (natural_key(p), str(p)))


def find_dirs(root: str | Path, name: str) -> list[Path]:
    """Folders called ``name`` (case-insensitive) at or below ``root``, in natural order.

    Published archives often nest their content under one or more wrapper folders; converters
    use this to find ``images/`` or ``training_set/`` wherever the archive put it.
    """
    root = Path(root)
    wanted = name.lower()
    found = [root] if root.name.lower() == wanted and root.is_dir() else []
    found += [p for p in root.rglob("*") if p.is_dir() and p.name.lower() == wanted]
    return natural_sorted(found)


def relative_source(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as a POSIX string (the ``source`` field of an image)."""
    return Path(path).relative_to(root).as_posix()

