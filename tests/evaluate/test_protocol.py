"""Evaluation prompts, and the whole protocol with a tiny random model and the baselines."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ultrasam.cli import main as cli_main
from ultrasam.evaluate import evaluate
from ultrasam.evaluate import prompts as P
from ultrasam.evaluate.protocol import checkpoint_name

from . import write_synthetic_coco

# ------------------------------------------------------------------------------ prompts

def test_centroid_may_fall_outside_a_non_convex_mask() -> None:
    m = np.zeros((10, 10), bool)
    m[0:2, 0:10] = True          # an L: top bar and left bar
    m[0:10, 0:2] = True
    x, y = P.centroid_point(m)
    rows, cols = np.nonzero(m)
    assert (x, y) == pytest.approx((cols.mean(), rows.mean()))
    assert not m[int(round(y)), int(round(x))]


def test_boxes_exact_and_from_masks() -> None:
    assert P.gt_box_xyxy((3, 4, 5, 6)).tolist() == [3, 4, 8, 10]
    m = np.zeros((10, 10), bool)
    m[2:5, 3:7] = True
    assert P.mask_box_xyxy(m).tolist() == [3, 2, 7, 5]           # x2 = last column + 1


def test_jitter_is_seeded_bounded_and_zero_is_identity() -> None:
    box = np.array([10.0, 10.0, 30.0, 20.0])
    assert P.jitter_box(box, 0.0, np.random.default_rng(0), 40, 40).tolist() == box.tolist()
    a = P.jitter_box(box, 0.1, np.random.default_rng(5), 40, 40)
    b = P.jitter_box(box, 0.1, np.random.default_rng(5), 40, 40)
    assert a.tolist() == b.tolist() and not np.allclose(a, box)
    assert np.all(np.abs(a - box) <= 0.1 * np.array([20, 10, 20, 10]) + 1e-9)
    edge = P.jitter_box(np.array([0.0, 0.0, 40.0, 40.0]), 0.5, np.random.default_rng(1), 40, 40)
    assert edge.min() >= 0 and edge.max() <= 40 and edge[2] - edge[0] >= 1
    with pytest.raises(ValueError, match="jitter"):
        P.jitter_box(box, -0.1, np.random.default_rng(0), 40, 40)


def test_random_interior_point_is_inside() -> None:
    m = np.zeros((20, 20), bool)
    m[5:8, 9:15] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = P.random_interior_point(m, rng)
        assert m[int(y), int(x)]


def test_corrective_click_goes_to_the_deepest_error_pixel() -> None:
    gt = np.zeros((21, 21), bool)
    gt[2:19, 2:19] = True
    pred = gt.copy()
    pred[6:13, 6:13] = False                       # 7x7 hole: false negative, centre (9, 9)
    (x, y), label = P.corrective_click(pred, gt, np.random.default_rng(0))
    assert label == 1 and (x, y) == (9, 9)
    fp = gt.copy()
    fp[0:21, 19:21] = True                         # a 2-px false-positive strip
    fp[2:19, 2:19] = True
    (x, y), label = P.corrective_click(fp, gt, np.random.default_rng(0))
    assert label == 0 and x in (19, 20) and not gt[int(y), int(x)]
    assert P.corrective_click(gt, gt, np.random.default_rng(0)) is None


# ------------------------------------------------------------------------------ protocol

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model saved in the native format (the ``tiny`` config)."""
    import torch

    from ultrasam import build_model, get_config, save_native

    torch.manual_seed(0)
    return save_native(build_model(get_config("tiny")), tmp_path_factory.mktemp("ck") / "tiny")


def _pycocotools(gt_path: Path, results_path: Path) -> tuple[float, float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(results_path)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def test_evaluate_model_and_baselines_end_to_end(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = write_synthetic_coco(tmp_path / "SYN")
    out = tmp_path / "eval"
    result = evaluate([tiny_checkpoint], data, out, split="val")
    name = checkpoint_name(tiny_checkpoint)
    assert name == "tiny"
    got = {(m["checkpoint"], m["protocol"]) for m in result["metrics"]}
    assert got == {("tiny", p) for p in P_PROTOCOLS} | {("baseline-ellipse", "box"),
                                                         ("baseline-grabcut", "box")}
    for ckpt, protocol in got:
        folder = out / ckpt / protocol
        metrics = json.loads((folder / "metrics.json").read_text())
        preds = json.loads((folder / "predictions.coco.json").read_text())
        assert metrics["n_instances"] == len(preds) == 3       # the 2-px instance is not prompted
        assert metrics["n_instances_too_small"] == 1 and metrics["n_instances_gt"] == 4
        assert metrics["n_images_without_instances"] == 1
        for key in ("checkpoint", "protocol", "segm_mAP", "segm_mAP_50", "dice_mean",
                    "iou_mean", "hd95_median", "by_dataset", "by_structure"):
            assert key in metrics
        assert set(preds[0]) == {"image_id", "category_id", "segmentation", "score"}
        assert isinstance(preds[0]["segmentation"]["counts"], str)
        # The Done-when check: metrics.json's mAP is pycocotools' own on the written files.
        assert (metrics["segm_mAP"], metrics["segm_mAP_50"]) == _pycocotools(
            out / "ground_truth.coco.json", folder / "predictions.coco.json")
        assert set(metrics["by_structure"]) == {"SYN/lesion", "SYN/vessel"}
        assert metrics["by_dataset"]["SYN"]["dice"]["n"] == 3
    ellipse = json.loads((out / "baseline-ellipse" / "box" / "predictions.coco.json").read_text())
    assert all(p["score"] == 1.0 for p in ellipse)
    model = json.loads((out / "tiny" / "point" / "predictions.coco.json").read_text())
    assert all(0 <= p["score"] <= 1.5 for p in model)
    # Sweeps: jitter levels, random points and 0-5 clicks for the model; jitter for baselines.
    rows = list(csv.DictReader((out / "tiny" / "sweeps" / "sweeps.csv").open()))
    sweeps = {(r["sweep"], r["protocol"]) for r in rows}
    assert sweeps == {("box_jitter", "box"), ("box_jitter", "box_refine"),
                      ("random_point", "point"), ("random_point", "point_refine"),
                      ("clicks", "point")}
    clicks = sorted(float(r["level"]) for r in rows if r["sweep"] == "clicks")
    assert clicks == [0, 1, 2, 3, 4, 5]
    j0 = next(r for r in rows if r["sweep"] == "box_jitter" and r["protocol"] == "box"
              and float(r["level"]) == 0)
    box = json.loads((out / "tiny" / "box" / "metrics.json").read_text())
    assert float(j0["dice_mean"]) == pytest.approx(box["dice_mean"])
    c0 = next(r for r in rows if r["sweep"] == "clicks" and float(r["level"]) == 0)
    point = json.loads((out / "tiny" / "point" / "metrics.json").read_text())
    assert float(c0["dice_mean"]) == pytest.approx(point["dice_mean"])
    base = json.loads((out / "baseline-grabcut" / "sweeps" / "sweeps.json").read_text())
    assert [r["level"] for r in base] == list(P.JITTER_LEVELS)
    # Report: tables, plots, example page.
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert len(summary) == 6
    assert "baseline-ellipse" in (out / "summary.md").read_text()
    assert (out / "plots" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "sweep_clicks.png").is_file()
    page = (out / "examples" / "index.html").read_text()
    assert page.count("<img") == 2 and (out / "examples" / "image_1.png").is_file()


P_PROTOCOLS = ("box", "box_refine", "point", "point_refine")


def test_same_seed_same_outputs_and_baselines_only(tmp_path: Path) -> None:
    data = write_synthetic_coco(tmp_path / "SYN")
    a = evaluate([], data, tmp_path / "a", baselines=("ellipse",), report=False)
    b = evaluate([], data, tmp_path / "b", baselines=("ellipse",), report=False)
    assert a["sweeps"] == b["sweeps"]
    for rel in ("baseline-ellipse/box/predictions.coco.json",
                "baseline-ellipse/box/metrics.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_bad_arguments(tmp_path: Path) -> None:
    data = write_synthetic_coco(tmp_path / "SYN")
    with pytest.raises(ValueError, match="protocols"):
        evaluate([], data, tmp_path / "o", protocols=("boxes",))
    with pytest.raises(ValueError, match="unknown baseline"):
        evaluate([], data, tmp_path / "o", baselines=("oracle",))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate([], data, tmp_path / "o", baselines=())
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        evaluate([tmp_path / "missing.pth"], data, tmp_path / "o")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_synthetic_coco(tmp_path / "SYN")
    out = tmp_path / "cli"
    assert cli_main(["evaluate", "--baselines-only", "--baselines", "ellipse", "--data",
                     str(data), "--split", "val", "--out", str(out), "--no-sweeps"]) == 0
    assert (out / "baseline-ellipse" / "box" / "metrics.json").is_file()
    assert not (out / "baseline-ellipse" / "sweeps").exists()
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "nope.pth"), "--data", str(data),
                     "--out", str(out)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_no_checkpoint_means_the_bundled_model(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import ultrasam.weights.checkpoints as checkpoints

    data = write_synthetic_coco(tmp_path / "SYN")
    # The bundled model ships with the package (git-tracked): no checkpoint evaluates it, under
    # the name "default", and it segments the bright boxed shapes (a wrong or random load
    # would not: Dice measured 0.987 on these two).
    assert (checkpoints.DEFAULT_MODEL_DIR / "model.safetensors").is_file()
    evaluate(None, data, tmp_path / "with", baselines=(), sweeps=False, max_images=2,
             protocols=["box"])
    metrics = json.loads((tmp_path / "with" / "default" / "box" / "metrics.json").read_text())
    assert metrics["checkpoint"] == "default"
    syn = metrics["by_dataset"]["SYN"]
    assert syn["n_instances"] == 2 and syn["dice"]["mean"] >= 0.9
    # Without one: a clear error before any work.
    monkeypatch.setattr(checkpoints, "DEFAULT_MODEL_DIR", tmp_path / "no_weights")
    with pytest.raises(RuntimeError, match="default model"):
        evaluate(None, data, tmp_path / "o", baselines=("ellipse",))
    assert not (tmp_path / "o" / "baseline-ellipse").exists()   # failed before any work
