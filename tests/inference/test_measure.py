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


def _brute_force(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[int, float, float,
                                                                          float]:
    """Area, centroid and the largest distance between any two pixel-square corners."""
    rows, cols = np.nonzero(mask)
    xs = np.concatenate([cols + dx for dx in (0, 1) for _ in (0, 1)]) * spacing[1]
    ys = np.concatenate([rows + dy for _ in (0, 1) for dy in (0, 1)]) * spacing[0]
    pts = np.stack([xs, ys], 1).astype(np.float64)
    d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()
    return rows.size, cols.mean() + 0.5, rows.mean() + 0.5, float(d)


@pytest.mark.parametrize("seed", range(6))
def test_random_blobs_match_brute_force(seed: int) -> None:
    # Several blobs, some with holes and ragged edges, anisotropic pixels.
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(8, 40, 2))
    yy, xx = np.ogrid[:h, :w]
    m = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 10)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    m &= rng.random((h, w)) < 0.8
    m[int(rng.integers(0, h)), int(rng.integers(0, w))] = True  # never empty
    spacing = (0.3, 0.2)
    area, cx, cy, diameter = _brute_force(m, spacing)
    got = measure_mask(m, spacing_mm=spacing)
    assert got.area_px == area
    assert got.centroid_x_px == pytest.approx(cx) and got.centroid_y_px == pytest.approx(cy)
    assert got.max_diameter_mm == pytest.approx(diameter, abs=1e-4)
