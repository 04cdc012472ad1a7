"""Per-instance segmentation metrics and their aggregation with confidence intervals.

Definitions (fixed here once, because libraries disagree):

- **Dice** = 2|P ∩ G| / (|P| + |G|); **IoU** = |P ∩ G| / |P ∪ G|. Both masks empty: 1.0.
- **Boundary** of a mask = the mask minus its erosion by the 3 x 3 square (8-neighbourhood),
  with everything outside the image counted as background, so a foreground pixel is on the
  boundary when any of its 8 neighbours is background or outside the image.
- **HD95** = the 95th percentile (``numpy.percentile``, linear interpolation) of the pooled
  symmetric boundary distances: for every boundary pixel of P the Euclidean distance between
  pixel centres to the nearest boundary pixel of G, together with the same for every boundary
  pixel of G towards P. In pixels, or in millimetres when the pixel spacing ``(row, col)`` is
  given. Both masks empty: 0. Exactly one empty: the image diagonal (the largest distance the
  image allows), so that a missed instance is penalised rather than silently dropped.
- **Confidence intervals**: percentile bootstrap (seeded, 1000 resamples by default) of the
  mean (Dice, IoU) or the median (HD95), 95 % by default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

HD_PERCENTILE = 95.0
N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
# Boundary-distance matrices are computed in row blocks of this many points to bound memory.
_CHUNK = 2048


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"masks must be two H x W arrays of the same shape, got {pred.shape} "
                         f"and {gt.shape}")
    return pred.astype(bool), gt.astype(bool)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two H x W masks (1.0 when both are empty)."""
    p, g = _check_pair(pred, gt)
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2.0 * int((p & g).sum()) / total


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two H x W masks (1.0 when both are empty)."""
    p, g = _check_pair(pred, gt)
    union = int((p | g).sum())
    return 1.0 if union == 0 else int((p & g).sum()) / union


def boundary(mask: np.ndarray) -> np.ndarray:
    """H x W bool: foreground pixels with a background (or off-image) 8-neighbour."""
    m = np.asarray(mask).astype(np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    # Pad with background so that pixels on the image edge count as boundary.
    padded = np.pad(m, 1, constant_values=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                       borderValue=0)[1:-1, 1:-1]
    return (m > 0) & (eroded == 0)


def _spacing(spacing: float | Sequence[float] | None) -> tuple[float, float]:
    if spacing is None:
        return 1.0, 1.0
    if isinstance(spacing, (int, float)):
        s = (float(spacing), float(spacing))
    else:
        vals = [float(v) for v in spacing]
        if len(vals) != 2:
            raise ValueError(f"spacing must be one number or (row, col), got {spacing!r}")
        s = (vals[0], vals[1])
    if not all(math.isfinite(v) and v > 0 for v in s):
        raise ValueError(f"spacing must be positive, got {spacing!r}")
    return s


def _nearest_distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """For each point of ``src`` (K x 2, scaled row/col) the distance to the nearest of ``dst``."""
    out = np.empty(len(src), dtype=np.float64)
    for start in range(0, len(src), _CHUNK):
        block = src[start:start + _CHUNK]
        d2 = ((block[:, None, :] - dst[None, :, :]) ** 2).sum(-1)
        out[start:start + _CHUNK] = np.sqrt(d2.min(axis=1))
    return out


def surface_distances(pred: np.ndarray, gt: np.ndarray,
                      spacing: float | Sequence[float] | None = None) -> np.ndarray:
    """Pooled symmetric boundary distances (pred -> gt, then gt -> pred), 1-D float64.

    Both masks must be non-empty (see ``hd95`` for the empty conventions).
    """
    p, g = _check_pair(pred, gt)
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks")
    sr, sc = _spacing(spacing)
    bnd_p, bnd_g = boundary(p), boundary(g)
    if sr == sc:
        # Isotropic: OpenCV's exact Euclidean distance transform (DIST_MASK_PRECISE) of the
        # other boundary's complement, read at this boundary's pixels; same values, far faster.
        def to(other: np.ndarray) -> np.ndarray:
            return cv2.distanceTransform((~other).astype(np.uint8), cv2.DIST_L2,
                                         cv2.DIST_MASK_PRECISE).astype(np.float64)

        return np.concatenate([to(bnd_g)[bnd_p], to(bnd_p)[bnd_g]]) * sr
    scale = np.array([sr, sc])
    bp = np.argwhere(bnd_p).astype(np.float64) * scale
    bg = np.argwhere(bnd_g).astype(np.float64) * scale
    return np.concatenate([_nearest_distances(bp, bg), _nearest_distances(bg, bp)])


def hd95(pred: np.ndarray, gt: np.ndarray,
         spacing: float | Sequence[float] | None = None) -> float:
    """95th-percentile symmetric Hausdorff distance (module docstring has the definition).

    ``spacing``: pixel size as one number or ``(row, col)``; None gives pixels.
    """
    p, g = _check_pair(pred, gt)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        sr, sc = _spacing(spacing)
        h, w = p.shape
        return float(math.hypot((h - 1) * sr, (w - 1) * sc))
    return float(np.percentile(surface_distances(p, g, spacing), HD_PERCENTILE))


@dataclass(frozen=True)
class InstanceScores:
    """Metrics of one predicted instance against its ground truth."""

    dice: float
    iou: float
    hd95_px: float
    hd95_mm: float | None  # None when the pixel spacing is unknown


def instance_scores(pred: np.ndarray, gt: np.ndarray,
                    spacing_mm: float | Sequence[float] | None = None,
                    with_hd95: bool = True) -> InstanceScores:
    """Dice, IoU and HD95 (pixels, and mm when ``spacing_mm`` is known) of one instance.

    ``with_hd95=False`` skips the (slower) distance computation and stores NaN.
    """
    p, g = _check_pair(pred, gt)
    if not with_hd95:
        return InstanceScores(dice(p, g), iou(p, g), math.nan, None)
    hd_px = hd95(p, g)
    hd_mm = None if spacing_mm is None else hd95(p, g, spacing_mm)
    return InstanceScores(dice(p, g), iou(p, g), hd_px, hd_mm)


def bootstrap_ci(values: Iterable[float], statistic: str = "mean", n_boot: int = N_BOOTSTRAP,
                 level: float = CI_LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean or median of ``values``.

    Returns ``(low, high)``; NaN values are dropped first; ``(nan, nan)`` when none remain.
    A single value gives a zero-width interval.
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    v = np.asarray(list(values), dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = v[rng.integers(0, v.size, size=(n_boot, v.size))]
    stats = samples.mean(axis=1) if statistic == "mean" else np.median(samples, axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarise(values: Iterable[float], statistic: str = "mean", seed: int = 0) -> dict[str, Any]:
    """``{"n", <statistic>, "ci_low", "ci_high"}`` of the non-NaN values (None when empty)."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"n": 0, statistic: None, "ci_low": None, "ci_high": None}
    centre = float(v.mean() if statistic == "mean" else np.median(v))
    lo, hi = bootstrap_ci(v, statistic, seed=seed)
    return {"n": int(v.size), statistic: centre, "ci_low": lo, "ci_high": hi}


def _group_summary(records: Sequence[Mapping[str, Any]], seed: int) -> dict[str, Any]:
    mm = [r.get("hd95_mm") for r in records]
    out = {
        "n_instances": len(records),
        "dice": summarise((r["dice"] for r in records), "mean", seed),
        "iou": summarise((r["iou"] for r in records), "mean", seed),
        "hd95_px": summarise((r["hd95_px"] for r in records), "median", seed),
    }
    # mm only when every instance of the group has a known spacing (no mixed units).
    if records and all(v is not None for v in mm):
        out["hd95_mm"] = summarise((float(v) for v in mm), "median", seed)  # type: ignore[arg-type]
    return out


def aggregate(records: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Summaries over all instances, per dataset and per ``dataset/structure``.

    ``records``: one mapping per instance with keys ``dice``, ``iou``, ``hd95_px``,
    ``hd95_mm`` (or None), ``dataset`` and ``structure``.
    """
    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    by_structure: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_dataset.setdefault(str(r["dataset"]), []).append(r)
        by_structure.setdefault(f"{r['dataset']}/{r['structure']}", []).append(r)
    return {
        "all": _group_summary(records, seed),
        "by_dataset": {k: _group_summary(v, seed) for k, v in sorted(by_dataset.items())},
        "by_structure": {k: _group_summary(v, seed) for k, v in sorted(by_structure.items())},
    }
