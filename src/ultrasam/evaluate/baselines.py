"""Image-free and classical box baselines, scored like a model (constant score 1.0).

- ``ellipse``: the box filled by its inscribed ellipse, exactly as measured in
  docs/findings.md: for a COCO box (x, y, w, h), OpenCV's filled ellipse with centre
  (round(x + w/2), round(y + h/2)) and semi-axes (round(w/2), round(h/2)). No image is used.
- ``grabcut``: OpenCV GrabCut initialised from the box (5 iterations, OpenCV's RNG seeded
  for reproducibility). When GrabCut cannot run (a box covering the whole image leaves no
  background sample, or a box under 2 px) the filled box is returned, and logged.

Boxes are XYXY in pixel-edge coordinates (x2 = x + w), as produced by ``prompts.gt_box_xyxy``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

BASELINE_SCORE = 1.0
GRABCUT_ITERATIONS = 5


def _round(v: float) -> int:
    # Python's round() rounds half to even (as in the findings' measurement, done in Python).
    return int(round(v))


def ellipse_mask(box_xywh: tuple[float, float, float, float] | np.ndarray,
                 height: int, width: int) -> np.ndarray:
    """H x W bool: the COCO box (x, y, w, h) filled by its inscribed ellipse."""
    x, y, w, h = (float(v) for v in box_xywh)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ValueError(f"invalid box (x, y, w, h) = {tuple(box_xywh)}")
    m = np.zeros((int(height), int(width)), np.uint8)
    cv2.ellipse(m, (_round(x + w / 2), _round(y + h / 2)), (_round(w / 2), _round(h / 2)),
                0, 0, 360, 1, thickness=-1)
    return m.astype(bool)


def _xyxy_to_xywh(box: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1, y1, x2 - x1, y2 - y1


def ellipse_from_box(image: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray:
    """The ellipse baseline for an XYXY box on an H x W (x 3) image (only its size is used)."""
    h, w = image.shape[:2]
    return ellipse_mask(_xyxy_to_xywh(box_xyxy), h, w)


def _filled_box(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return m


def grabcut_from_box(image: np.ndarray, box_xyxy: np.ndarray, seed: int = 0,
                     iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """H x W bool GrabCut segmentation of an RGB (H x W x 3) or grey (H x W) uint8 image."""
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"image must be H x W or H x W x 3 uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else \
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    # Integer rectangle covering the box, clipped to the image.
    ix1, iy1 = max(int(math.floor(x1)), 0), max(int(math.floor(y1)), 0)
    ix2, iy2 = min(int(math.ceil(x2)), w), min(int(math.ceil(y2)), h)
    if ix2 - ix1 < 2 or iy2 - iy1 < 2 or (ix1 == 0 and iy1 == 0 and ix2 == w and iy2 == h):
        log.info("grabcut: box %s cannot initialise GrabCut; using the filled box",
                 [round(v, 2) for v in (x1, y1, x2, y2)])
        return _filled_box(h, w, ix1, iy1, ix2, iy2)
    mask = np.zeros((h, w), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(int(seed))
    try:
        cv2.grabCut(bgr, mask, (ix1, iy1, ix2 - ix1, iy2 - iy1), bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error as e:  # e.g. a uniform image whose GMMs cannot be fitted
        log.info("grabcut failed on box %s (%s); using the filled box",
                 [round(v, 2) for v in (x1, y1, x2, y2)], str(e).strip().splitlines()[-1])
        return _filled_box(h, w, ix1, iy1, ix2, iy2)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ellipse": ellipse_from_box,
    "grabcut": grabcut_from_box,
}


def baseline_predict(name: str, image: np.ndarray,
                     boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (B x H x W bool) and scores (B,) of baseline ``name`` for B x 4 XYXY boxes."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    h, w = image.shape[:2]
    fn = BASELINES[name]
    masks = np.zeros((len(boxes), h, w), bool)
    for i, box in enumerate(boxes):
        masks[i] = fn(image, box)
    return masks, np.full(len(boxes), BASELINE_SCORE)
