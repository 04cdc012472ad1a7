"""Classification metrics against values computed by hand on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ultrasam.finetune.cls_metrics import (
    binary_auc,
    calibration,
    classification_report,
    point_metrics,
)

# 6 cases, 3 classes. Arg-max predictions: 0, 1, 1, 2, 2, 0.
Y = np.array([0, 0, 1, 1, 2, 2])
P = np.array([[0.7, 0.2, 0.1],
              [0.3, 0.6, 0.1],
              [0.2, 0.5, 0.3],
              [0.1, 0.3, 0.6],
              [0.1, 0.1, 0.8],
              [0.5, 0.25, 0.25]])


def test_point_metrics_by_hand() -> None:
    m = point_metrics(Y, P)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 2) / 3)
    # Every class: TP 1, FP 1, FN 1 -> F1 = 2 / (2 + 1 + 1) = 0.5.
    assert m["macro_f1"] == pytest.approx(0.5)
    # Class 0 scores: positives {0.7, 0.3}, negatives {0.2, 0.1, 0.1, 0.5}: pairs won
    # 0.7 beats all 4, 0.3 beats 3 -> 7 / 8.
    assert m["auc_per_class"][0] == pytest.approx(7 / 8)
    # Class 1: positives {0.5, 0.3}, negatives {0.2, 0.6, 0.1, 0.25}: 0.5 beats 3, 0.3 beats 3.
    assert m["auc_per_class"][1] == pytest.approx(6 / 8)
    # Class 2: positives {0.8, 0.25}, negatives {0.1, 0.1, 0.3, 0.6}: 0.8 beats 4, 0.25 beats 2.
    assert m["auc_per_class"][2] == pytest.approx(6 / 8)
    assert m["auc_ovr"] == pytest.approx((7 / 8 + 6 / 8 + 6 / 8) / 3)


def test_f1_counts_a_predicted_but_absent_class_as_zero() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.eye(3)[[0, 2, 1, 1]]  # one class-0 image predicted as the absent class 2
    m = point_metrics(y, p)
    # class 0: TP 1 FN 1 -> 2/3; class 1: 1; class 2: TP 0 FP 1 -> 0.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)


def test_auc_ties_count_half_and_undefined_is_nan() -> None:
    assert binary_auc(np.array([0.5, 0.5]), np.array([True, False])) == pytest.approx(0.5)
    assert binary_auc(np.array([0.1, 0.9, 0.5, 0.5]),
                      np.array([False, True, True, False])) == pytest.approx((3 + 0.5) / 4)
    assert math.isnan(binary_auc(np.array([0.2, 0.3]), np.array([True, True])))


def test_calibration_bins_and_ece_by_hand() -> None:
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.95, 0.05], [0.15, 0.85], [0.65, 0.35], [0.35, 0.65]])
    cal = calibration(y, p, n_bins=10)
    # confidences 0.95 (right), 0.85 (right), 0.65 (wrong), 0.65 (wrong)
    bins = {round(b["low"], 1): b for b in cal["bins"] if b["n"]}
    assert sorted(bins) == [0.6, 0.8, 0.9]
    assert bins[0.9]["accuracy"] == 1.0 and bins[0.8]["accuracy"] == 1.0
    assert bins[0.6]["n"] == 2 and bins[0.6]["accuracy"] == 0.0
    ece = (abs(1 - 0.95) + abs(1 - 0.85) + 2 * abs(0 - 0.65)) / 4
    assert cal["ece"] == pytest.approx(ece)


def test_report_cis_bracket_the_estimate_and_are_seeded() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    p[np.arange(60), y] += 0.5
    p /= p.sum(1, keepdims=True)
    a = classification_report(y, p, n_boot=200, seed=1)
    b = classification_report(y, p, n_boot=200, seed=1)
    assert a == b
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr"):
        lo, hi = a[f"{key}_ci"]
        assert lo <= a[key] <= hi and hi - lo > 0
    assert np.allclose(np.asarray(a["confusion_norm"]).sum(1), 1)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="labels must lie"):
        point_metrics(np.array([0, 3]), np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="N labels"):
        point_metrics(np.array([0]), np.ones((2, 3)) / 3)
