"""Mask measurements by exact arithmetic on known masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ultrasam.inference.measure import max_feret_diameter, measure_mask, series_summary


def test_rectangle_in_pixels_and_millimetres() -> None:
    m = np.zeros((40, 50), bool)
    m[10:16, 20:28] = True  # 6 rows x 8 columns
    px = measure_mask(m)
    assert px.area_px == 48 and px.area_mm2 is None and px.max_diameter_mm is None
    assert px.max_diameter_px == pytest.approx(10.0)  # sqrt(8^2 + 6^2), edge to edge
    assert (px.centroid_x_px, px.centroid_y_px) == (24.0, 13.0)
    mm = measure_mask(m, spacing_mm=(0.5, 0.25))  # rows 0.5 mm, columns 0.25 mm
    assert mm.area_mm2 == pytest.approx(48 * 0.125)
    assert mm.max_diameter_mm == pytest.approx(math.hypot(8 * 0.25, 6 * 0.5))


def test_single_pixel_empty_and_diagonal() -> None:
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    assert max_feret_diameter(one) == pytest.approx(math.sqrt(2))
    empty = measure_mask(np.zeros((5, 5), bool))
    assert empty.area_px == 0 and empty.max_diameter_px == 0 and empty.centroid_x_px is None
    diag = np.eye(10, dtype=bool)  # 10 pixels corner to corner
    assert max_feret_diameter(diag) == pytest.approx(10 * math.sqrt(2))
    with pytest.raises(ValueError, match="H x W"):
        measure_mask(np.zeros((2, 3, 4), bool))


def test_series_summary_and_fractional_area_change() -> None:
    s = series_summary([100, None, 40, 70])
    assert s == {"min": 40.0, "max": 100.0, "mean": 70.0, "fractional_area_change": 0.6}
    assert series_summary([None])["fractional_area_change"] is None
