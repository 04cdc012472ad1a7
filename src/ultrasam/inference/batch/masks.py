"""Mask encodings for records (RLE, bbox, polygons) and mask prompts (image -> SAM logits)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Logit magnitude given to a binary mask prompt: logit(1 - 1e-3) ~ 6.9, as SAM's own low-res
# logits of confident pixels; a larger value would saturate the prompt encoder's convolutions.
_MASK_PROMPT_EPS = 1e-3


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed COCO RLE of an H x W bool mask, ``counts`` as ASCII text (JSON-ready)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """H x W bool mask from an RLE written by :func:`encode_rle`."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"],
                              "counts": rle["counts"].encode("ascii")}).astype(bool)


def bbox_xywh(mask: np.ndarray) -> list[int] | None:
    """Tight COCO bbox [x, y, w, h] of the foreground, None when empty."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
            int(ys.max() - ys.min() + 1)]


def polygons(mask: np.ndarray) -> list[list[float]]:
    """Outer boundaries as COCO polygons ``[x0, y0, x1, y1, ...]`` (pixel corners traced by
    OpenCV, vertices at pixel centres); holes are not represented (the RLE keeps them)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        if len(c) >= 3:  # a polygon needs three vertices; thinner specks are in the RLE only
            out.append([float(v) for v in c.reshape(-1)])
    return out


def finite_or_none(value: float) -> float | None:
    """A score for JSON: NaN/inf (from broken weights) become null, never invalid JSON."""
    v = float(value)
    return v if math.isfinite(v) else None


def read_mask_prompt(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """H x W bool mask from an image file (any non-zero pixel in any channel is foreground).

    Raises:
        FileNotFoundError / ValueError: missing or unreadable file, or a size other than ``size``.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mask prompt not found: {p}")
    try:
        with Image.open(p) as img:
            arr = np.asarray(img)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read mask prompt {p}: {e}") from e
    mask = arr != 0
    if mask.ndim == 3:
        mask = mask.any(axis=2)
    if mask.shape != tuple(size):
        raise ValueError(f"mask prompt {p.name} is {mask.shape[1]}x{mask.shape[0]} but the image "
                         f"is {size[1]}x{size[0]}")
    return mask


def mask_prompt_logits(mask: np.ndarray, input_size: tuple[int, int], img_size: int,
                       mask_size: int) -> np.ndarray:
    """Binary H x W mask -> SAM's ``mask_input``, 1 x L x L logits (L = ``mask_size``).

    The mask follows the image's path into the model frame: resized to ``input_size`` (the
    resized image's h x w), padded bottom/right to ``img_size`` square, then area-averaged to
    L x L; the foreground fraction p of each low-res pixel becomes ``log(p / (1 - p))`` with p
    clipped to [1e-3, 1 - 1e-3].
    """
    h, w = input_size
    resized = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    square = np.zeros((img_size, img_size), np.float32)
    square[:h, :w] = resized
    low = cv2.resize(square, (mask_size, mask_size), interpolation=cv2.INTER_AREA)
    p = np.clip(low, _MASK_PROMPT_EPS, 1.0 - _MASK_PROMPT_EPS)
    return np.log(p / (1.0 - p))[None].astype(np.float32)
