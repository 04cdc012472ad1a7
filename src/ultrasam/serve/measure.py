"""The API's view of a mask's measurements, computed by :mod:`ultrasam.inference.measure`
(area in px and mm^2; largest diameter = maximum Feret diameter, edge to edge)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ultrasam.inference.measure import measure_mask


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


def measure(mask: np.ndarray, spacing_mm: tuple[float, float] | None,
            calibration: Any | None = None) -> Measurement:
    """Measure an H x W bool mask; ``calibration`` (DICOM regions) decides per mask, else
    ``spacing_mm`` (row_mm, col_mm) applies when known."""
    m = measure_mask(mask, spacing_mm, calibration)
    calibrated = m.area_mm2 is not None
    note = m.note
    if not calibrated and m.area_px > 0:
        note = f"{note or 'no physical calibration'}: measurements are in pixels"
    return Measurement(m.area_px, m.area_mm2, m.max_diameter_px, m.max_diameter_mm,
                       calibrated, note)
