"""Ellipse and GrabCut baselines; the ellipse reproduces docs/findings.md on the real corpus."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ultrasam.evaluate import evaluate
from ultrasam.evaluate.baselines import baseline_predict, ellipse_from_box, ellipse_mask, \
    grabcut_from_box
from ultrasam.evaluate.metrics import dice


def test_ellipse_follows_the_findings_definition() -> None:
    # Box (x, y, w, h) = (10, 4, 21, 9): centre (round(20.5), round(8.5)) = (20, 8) (Python
    # rounds half to even), semi-axes (round(10.5), round(4.5)) = (10, 4).
    m = ellipse_mask((10, 4, 21, 9), 20, 40)
    expected = np.zeros((20, 40), np.uint8)
    cv2.ellipse(expected, (20, 8), (10, 4), 0, 0, 360, 1, -1)
    assert np.array_equal(m, expected.astype(bool))
    assert m[8, 10] and m[8, 30] and m[4, 20] and m[12, 20]      # touches the four sides
    assert not m[4, 10] and not m[:, :10].any() and not m[:, 31:].any()
    image = np.zeros((20, 40, 3), np.uint8)
    assert np.array_equal(ellipse_from_box(image, np.array([10, 4, 31, 13])), m)
    with pytest.raises(ValueError, match="invalid box"):
        ellipse_mask((0, 0, -1, 3), 5, 5)


def test_grabcut_segments_a_bright_disk_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(50, 10, (80, 80, 3))
    gt = np.zeros((80, 80), np.uint8)
    cv2.circle(gt, (40, 38), 15, 1, -1)
    img[gt > 0] = rng.normal(200, 10, (int(gt.sum()), 3))
    img = np.clip(img, 0, 255).astype(np.uint8)
    box = np.array([22, 20, 58, 56])
    m = grabcut_from_box(img, box)
    assert dice(m, gt > 0) > 0.9
    assert np.array_equal(m, grabcut_from_box(img, box))
    grey = grabcut_from_box(img[..., 0], box)
    assert grey.shape == (80, 80) and dice(grey, gt > 0) > 0.8
    # A box covering the whole image leaves no background sample: the filled box is returned.
    assert grabcut_from_box(img, np.array([0, 0, 80, 80])).all()


def test_baseline_predict_batches_and_scores_one() -> None:
    image = np.zeros((30, 40), np.uint8)
    masks, scores = baseline_predict("ellipse", image, np.array([[2, 2, 12, 10], [20, 5, 38, 25]]))
    assert masks.shape == (2, 30, 40) and masks.dtype == bool
    assert scores.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_predict("oracle", image, np.zeros((1, 4)))


def test_ellipse_reproduces_findings_on_mmotu_val(us_corpus: Path, tmp_path: Path) -> None:
    """docs/findings.md: mean Dice 0.893, class-agnostic mask mAP 0.579 on MMOTU-2D val."""
    out = evaluate([], us_corpus / "MMOTU_2d" / "annotations.coco.json", tmp_path, split="val",
                   baselines=("ellipse",), sweeps=False, report=False)
    (m,) = out["metrics"]
    assert m["checkpoint"] == "baseline-ellipse" and m["protocol"] == "box"
    assert m["n_images"] == 469 and m["n_instances"] == 476
    assert m["dice_mean"] == pytest.approx(0.893, abs=0.002)
    assert m["segm_mAP"] == pytest.approx(0.579, abs=0.002)
    assert m["dice_ci"][0] < m["dice_mean"] < m["dice_ci"][1]


@pytest.mark.slow
@pytest.mark.parametrize("dataset,expected", [("BUSI", 0.890), ("BUS_UCLM", 0.900),
                                              ("HC", 0.978), ("PSFHS", 0.918),
                                              ("DDTI", 0.915), ("USGRA", 0.875),
                                              ("TG3K", 0.661)])
def test_ellipse_dice_per_dataset_matches_findings(us_corpus: Path, tmp_path: Path,
                                                   dataset: str, expected: float) -> None:
    out = evaluate([], us_corpus / dataset / "annotations.coco.json", tmp_path,
                   baselines=("ellipse",), sweeps=False, report=False)
    assert out["metrics"][0]["dice_mean"] == pytest.approx(expected, abs=0.002)
