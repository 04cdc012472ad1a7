"""Measurements of one mask: area (px, and mm^2 when calibrated) and largest diameter.

Largest diameter: the longest distance between two points of the mask's pixel squares
(edge to edge, as calipers would be placed), i.e. the maximum Feret diameter of the union of
its pixels; a single pixel measures sqrt(2) px. It is computed on the convex hull of the
outer-contour pixel corners, scaled by the pixel spacing first when calibrated (so anisotropic
pixels are measured correctly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Measurement:
    """``area_mm2`` / ``diameter_mm`` are None when the frame has no usable calibration;
    ``note`` then says why (and that values are in pixels)."""

    area_px: int
    area_mm2: float | None
    diameter_px: float
    diameter_mm: float | None
    calibrated: bool
    note: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def largest_diameter(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Maximum Feret diameter of an H x W bool mask, in units of ``spacing`` (row, col)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return 0.0
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    corners = (centres[:, None, :] + np.array([[-.5, -.5], [.5, -.5], [-.5, .5], [.5, .5]])
               ).reshape(-1, 2)  # (x, y) of every corner of every contour pixel
    scaled = corners * np.array([spacing[1], spacing[0]])
    hull = cv2.convexHull(scaled.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def measure(mask: np.ndarray, spacing_mm: tuple[float, float] | None,
            calibration: Any | None = None) -> Measurement:
    """Measure an H x W bool mask.

    ``calibration`` (a DICOM :class:`ultrasam.io.dicom.Calibration`) decides per mask: the mask
    must lie inside one calibrated ultrasound region. Otherwise ``spacing_mm`` (row_mm, col_mm)
    of the frame applies when known.
    """
    area_px = int(np.count_nonzero(mask))
    diameter_px = largest_diameter(mask)
    note: str | None = None
    spacing = spacing_mm
    if calibration is not None:
        from ultrasam.io.dicom import region_spacing_for_mask

        spacing, warnings = region_spacing_for_mask(mask, calibration)
        note = "; ".join(warnings) or None
    if area_px == 0:
        return Measurement(0, None, 0.0, None, spacing is not None, "empty mask")
    if spacing is None:
        return Measurement(area_px, None, diameter_px, None, False,
                           note or "no physical calibration: measurements are in pixels")
    area_mm2 = area_px * spacing[0] * spacing[1]
    diameter_mm = largest_diameter(mask, spacing)
    return Measurement(area_px, float(area_mm2), diameter_px, diameter_mm, True, note)
