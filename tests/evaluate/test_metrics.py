"""Dice, IoU and HD95 against hand-computed values; bootstrap intervals; aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ultrasam.evaluate import metrics as M


def square(size: int, r0: int, c0: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[r0:r0 + side, c0:c0 + side] = True
    return m


def test_dice_and_iou_hand_computed() -> None:
    pred = square(6, 0, 0, 2)                          # 4 px
    gt = np.zeros((6, 6), bool)
    gt[0:2, 1:4] = True                                # 6 px, overlap 2 px
    assert M.dice(pred, gt) == pytest.approx(2 * 2 / (4 + 6))
    assert M.iou(pred, gt) == pytest.approx(2 / 8)
    empty = np.zeros((6, 6), bool)
    assert M.dice(empty, empty) == 1.0 and M.iou(empty, empty) == 1.0
    assert M.dice(pred, empty) == 0.0


def test_boundary_is_mask_minus_8_neighbour_erosion_with_background_outside() -> None:
    b = M.boundary(square(5, 1, 1, 3))
    assert b.sum() == 8 and not b[2, 2]                 # the 3x3 ring, centre excluded
    full = M.boundary(np.ones((4, 4), bool))            # image edge counts as background
    assert full.sum() == 12 and not full[1:3, 1:3].any()


def test_hd95_hand_computed_case() -> None:
    # Two 3x3 squares, the second shifted two columns right. Each boundary is the 8-pixel ring.
    # pred -> gt: the shared column 3 gives 0 (x3), column 4 gives 1 (x2), column 5 gives 2 (x3);
    # gt -> pred is the mirror image. Pooled: six 0s, four 1s, six 2s.
    gt, pred = square(7, 1, 1, 3), square(7, 1, 3, 3)
    d = np.sort(M.surface_distances(pred, gt))
    assert d.tolist() == [0.0] * 6 + [1.0] * 4 + [2.0] * 6
    # numpy's linear percentile: position 0.95 * 15 = 14.25, between two 2s.
    assert M.hd95(pred, gt) == pytest.approx(2.0)
    # Anisotropic spacing (row 1.0 mm, col 0.5 mm): every distance here is along columns.
    assert M.hd95(pred, gt, spacing=(1.0, 0.5)) == pytest.approx(1.0)


def test_hd95_interpolates_between_order_statistics() -> None:
    # gt: one pixel at (0, 0); pred: (0, 0) and (0, 4). Boundaries are the pixels themselves.
    # pred -> gt: 0, 4; gt -> pred: 0. Pooled [0, 0, 4]: position 0.95 * 2 = 1.9 -> 0 + 0.9 * 4.
    gt = np.zeros((3, 6), bool)
    gt[0, 0] = True
    pred = gt.copy()
    pred[0, 4] = True
    assert M.hd95(pred, gt) == pytest.approx(3.6)


def test_hd95_empty_conventions() -> None:
    empty = np.zeros((7, 5), bool)
    assert M.hd95(empty, empty) == 0.0
    one = square(7, 1, 1, 2)[:, :5]
    assert M.hd95(empty, one) == pytest.approx(math.hypot(6, 4))
    assert M.hd95(one, empty, spacing=2.0) == pytest.approx(2 * math.hypot(6, 4))
    assert M.hd95(one, one) == 0.0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="same shape"):
        M.dice(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(square(5, 1, 1, 2), square(5, 2, 2, 2), spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="statistic"):
        M.bootstrap_ci([1.0], "mode")


def test_instance_scores_mm_only_with_spacing() -> None:
    gt, pred = square(7, 1, 1, 3), square(7, 1, 3, 3)
    s = M.instance_scores(pred, gt)
    assert s.hd95_mm is None and s.hd95_px == pytest.approx(2.0)
    assert s.dice == pytest.approx(2 * 3 / 18) and s.iou == pytest.approx(3 / 15)
    assert M.instance_scores(pred, gt, 0.25).hd95_mm == pytest.approx(0.5)
    assert math.isnan(M.instance_scores(pred, gt, with_hd95=False).hd95_px)


def test_isotropic_fast_path_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    a = np.zeros((40, 50), np.uint8)
    b = np.zeros((40, 50), np.uint8)
    import cv2

    cv2.ellipse(a, (20, 18), (14, 9), 20, 0, 360, 1, -1)
    cv2.circle(b, (24, 20), 11, 1, -1)
    b[rng.integers(0, 40, 30), rng.integers(0, 50, 30)] = 1      # scattered islands
    fast = np.sort(M.surface_distances(a, b, 0.3))
    # (0.3, 0.3 + tiny) takes the brute-force path.
    slow = np.sort(M.surface_distances(a, b, (0.3, 0.3 + 1e-12)))
    assert fast == pytest.approx(slow, abs=1e-5)


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    v = np.random.default_rng(1).uniform(0, 1, 200)
    lo, hi = M.bootstrap_ci(v, seed=3)
    assert lo < v.mean() < hi and hi - lo < 0.2
    assert (lo, hi) == M.bootstrap_ci(v, seed=3)
    assert M.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    lo_m, hi_m = M.bootstrap_ci(v, "median")
    assert lo_m < float(np.median(v)) < hi_m
    assert all(math.isnan(x) for x in M.bootstrap_ci([math.nan]))


def test_aggregate_per_dataset_and_structure() -> None:
    recs = [
        {"dataset": "A", "structure": "x", "dice": 0.8, "iou": 0.7, "hd95_px": 2.0, "hd95_mm": 1.0},
        {"dataset": "A", "structure": "y", "dice": 0.6, "iou": 0.5, "hd95_px": 4.0, "hd95_mm": 2.0},
        {"dataset": "B", "structure": "x", "dice": 0.4, "iou": 0.3, "hd95_px": 6.0,
         "hd95_mm": None},
    ]
    agg = M.aggregate(recs)
    assert agg["all"]["n_instances"] == 3
    assert agg["all"]["dice"]["mean"] == pytest.approx(0.6)
    assert agg["all"]["hd95_px"]["median"] == pytest.approx(4.0)
    assert "hd95_mm" not in agg["all"]                  # mixed: B has no spacing
    assert agg["by_dataset"]["A"]["hd95_mm"]["median"] == pytest.approx(1.5)
    assert sorted(agg["by_structure"]) == ["A/x", "A/y", "B/x"]
    assert agg["by_structure"]["B/x"]["dice"]["mean"] == pytest.approx(0.4)
