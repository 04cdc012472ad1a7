"""Evaluation prompts derived from ground-truth masks, deterministic given a seeded generator.

Coordinate frame: pixel coordinates of the evaluated image as SAM's predictor takes them, x to
the right, y down; a point on the pixel at row i, column j is (j, i), and a COCO box
(x, y, w, h) is the XYXY box (x, y, x + w, y + h). No +0.5 pixel-centre shift is added here:
the prompt encoder (Meta's) adds it to every coordinate, so it is applied exactly once
(``ultrasam.inference.refine`` documents the same rule).
Points are (x, y); boxes are (x1, y1, x2, y2).
"""

from __future__ import annotations

import numpy as np

# An instance needs this many pixels to be prompted; smaller ones are counted and reported.
MIN_PROMPT_AREA = 4
JITTER_LEVELS = (0.0, 0.05, 0.1, 0.2)
MAX_CLICKS = 5


def _mask(mask: np.ndarray) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    return m.astype(bool)


def is_promptable(mask: np.ndarray, min_area: int = MIN_PROMPT_AREA) -> bool:
    """Whether an H x W instance mask is large enough to prompt (``min_area`` pixels)."""
    return int(_mask(mask).sum()) >= max(int(min_area), 1)


def centroid_point(mask: np.ndarray) -> np.ndarray:
    """(2,) float xy: mean of the foreground pixel coordinates (may lie outside the mask)."""
    rows, cols = np.nonzero(_mask(mask))
    if rows.size == 0:
        raise ValueError("cannot take the centroid of an empty mask")
    return np.array([cols.mean(), rows.mean()], dtype=np.float64)


def gt_box_xyxy(bbox_xywh: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    """(4,) float XYXY from a COCO box (x, y, w, h): exactly (x, y, x + w, y + h)."""
    x, y, w, h = (float(v) for v in bbox_xywh)
    if w < 0 or h < 0:
        raise ValueError(f"box has negative size: {tuple(bbox_xywh)}")
    return np.array([x, y, x + w, y + h])


def mask_box_xyxy(mask: np.ndarray) -> np.ndarray:
    """(4,) XYXY box of a mask: (first col, first row, last col + 1, last row + 1)."""
    rows, cols = np.nonzero(_mask(mask))
    if rows.size == 0:
        raise ValueError("cannot take the box of an empty mask")
    return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.float64)


def jitter_box(box_xyxy: np.ndarray, level: float, rng: np.random.Generator,
               height: int, width: int) -> np.ndarray:
    """Each coordinate moved by U(-level, level) x the box's width (x) or height (y).

    The result is clipped to the image and kept at least 1 px wide and high.
    ``level`` 0 returns the box unchanged (and draws nothing from ``rng``).
    """
    if level < 0:
        raise ValueError(f"jitter level must be >= 0, got {level}")
    box = np.asarray(box_xyxy, dtype=np.float64).copy()
    if level == 0:
        return box
    w, h = box[2] - box[0], box[3] - box[1]
    box += rng.uniform(-level, level, size=4) * np.array([w, h, w, h])
    x1, x2 = sorted((float(np.clip(box[0], 0, width)), float(np.clip(box[2], 0, width))))
    y1, y2 = sorted((float(np.clip(box[1], 0, height)), float(np.clip(box[3], 0, height))))
    if x2 - x1 < 1:
        x1 = min(x1, width - 1.0)
        x2 = x1 + 1.0
    if y2 - y1 < 1:
        y1 = min(y1, height - 1.0)
        y2 = y1 + 1.0
    return np.array([x1, y1, x2, y2])


def random_interior_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(2,) xy: a foreground pixel drawn uniformly."""
    rows, cols = np.nonzero(_mask(mask))
    if rows.size == 0:
        raise ValueError("cannot draw a point inside an empty mask")
    k = int(rng.integers(rows.size))
    return np.array([cols[k], rows[k]], dtype=np.float64)


def interior_distance(region: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each pixel of a bool H x W region to its boundary (the image
    edge counts as boundary); 0 outside the region."""
    import cv2

    # Pad with background so that the image edge counts as the region's boundary.
    padded = np.pad(region.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def corrective_click(pred: np.ndarray, gt: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, int] | None:
    """The next corrective click for a prediction, or None when it equals the ground truth.

    The click goes to the pixel of the error regions (false negatives ``gt & ~pred`` and false
    positives ``pred & ~gt``) farthest from its region's boundary (exact Euclidean distance
    transform, the image edge counting as boundary); it is positive (label 1) in a
    false-negative region and negative (label 0) in a false-positive one. Ties are broken by
    ``rng``. Returns ``(xy (2,), label)``.
    """
    p, g = _mask(pred), _mask(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    fn, fp = g & ~p, p & ~g
    if not fn.any() and not fp.any():
        return None
    d_fn, d_fp = interior_distance(fn), interior_distance(fp)
    best_fn, best_fp = float(d_fn.max()), float(d_fp.max())
    # On equal depth prefer the positive click (the object is what the user is after).
    dist, label = (d_fn, 1) if best_fn >= best_fp else (d_fp, 0)
    rows, cols = np.nonzero(dist == dist.max())
    k = int(rng.integers(rows.size))
    return np.array([cols[k], rows[k]], dtype=np.float64), label


def image_rng(seed: int, image_id: int, stream: int) -> np.random.Generator:
    """A generator for one image and one prompt stream, independent of evaluation order.

    Every method (model or baseline) gets the same prompts for the same seed.
    """
    return np.random.default_rng([int(seed), int(image_id), int(stream)])
