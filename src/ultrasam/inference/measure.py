"""Measurements of one mask and of a mask over time: area, largest diameter, centroid.

Definitions (the same for every frame, so curves over time are comparable):

* **area**: the number of mask pixels; in mm^2, that count times the pixel's row x column
  spacing. DICOM ultrasound calibration decides per mask: the mask must lie inside one
  calibrated region (:func:`ultrasam.io.dicom.region_spacing_for_mask`).
* **largest diameter**: the maximum Feret diameter of the union of the mask's pixel *squares*
  (edge to edge, as calipers are placed): a w x h rectangle measures sqrt(w^2 + h^2) and a single
  pixel sqrt(2). Computed on the convex hull of the outer-contour pixel corners, scaled by the
  spacing first when calibrated (correct for anisotropic pixels).
* **centroid**: the mean of the pixel centres, ``(x, y)`` with pixel (row i, column j) centred at
  ``(j + 0.5, i + 0.5)``.
* **fractional area change** of a series: ``(max - min) / max`` (the echocardiography FAC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

_CORNERS = np.array([[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]])


@dataclass(frozen=True)
class MaskMeasurement:
    """One mask's measurements; the ``*_mm*`` values are ``None`` without calibration."""

    area_px: int
    area_mm2: float | None
    max_diameter_px: float
    max_diameter_mm: float | None
    centroid_x_px: float | None
    centroid_y_px: float | None
    note: str | None = None


def max_feret_diameter(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Largest diameter of an H x W bool mask in units of ``spacing`` (row, col); 0 if empty."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    if not m.any():
        return 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours])
    # Hull of the pixel centres first: the hull of all pixel squares is that hull plus a
    # square, whose vertices are corners of the centre hull's vertices, so only those are
    # expanded (the same hull from far fewer points: a server measures every mask).
    centres = cv2.convexHull(centres).reshape(-1, 2).astype(np.float64)
    corners = (centres[:, None, :] + _CORNERS).reshape(-1, 2) * np.array([spacing[1], spacing[0]])
    hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def measure_mask(mask: np.ndarray, spacing_mm: tuple[float, float] | None = None,
                 calibration: Any = None) -> MaskMeasurement:
    """Measure an H x W bool mask (see the module docstring).

    ``calibration``: a DICOM :class:`~ultrasam.io.dicom.Calibration`, which decides per mask;
    otherwise ``spacing_mm`` ``(row_mm, col_mm)`` applies when given.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {m.shape}")
    # Image moments (C) rather than np.nonzero: the count and the mean pixel index in one pass.
    moments = cv2.moments(m.view(np.uint8), binaryImage=True)
    area = int(round(moments["m00"]))
    if area == 0:
        return MaskMeasurement(0, None, 0.0, None, None, None, "empty mask")
    note = None
    spacing = spacing_mm
    if calibration is not None:
        from ultrasam.io.dicom import region_spacing_for_mask

        spacing, warnings = region_spacing_for_mask(m, calibration)
        note = "; ".join(warnings) or None
    cx, cy = moments["m10"] / moments["m00"] + 0.5, moments["m01"] / moments["m00"] + 0.5
    diameter_px = max_feret_diameter(m)
    if spacing is None:
        return MaskMeasurement(area, None, diameter_px, None, cx, cy,
                               note or "no physical calibration")
    return MaskMeasurement(area, area * float(spacing[0]) * float(spacing[1]), diameter_px,
                           max_feret_diameter(m, spacing), cx, cy, note)


def series_summary(areas: Sequence[float | None]) -> dict[str, float | None]:
    """min / max / mean and fractional area change ``(max - min) / max`` of an area series.

    ``None`` entries (frames without a value) are left out; an empty series gives ``None``s.
    """
    values = np.array([a for a in areas if a is not None], dtype=np.float64)
    if values.size == 0:
        return {"min": None, "max": None, "mean": None, "fractional_area_change": None}
    lo, hi = float(values.min()), float(values.max())
    return {"min": lo, "max": hi, "mean": float(values.mean()),
            "fractional_area_change": (hi - lo) / hi if hi > 0 else None}
