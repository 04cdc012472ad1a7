"""The interactive (NoC) protocol: exact arithmetic on a known mask sequence, then its mechanics
with random tiny weights of both model families on a synthetic phantom, end to end."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from ultrasam.cli import main as cli_main
from ultrasam.commands.evaluate import PROTOCOL_CHOICES
from ultrasam.evaluate import evaluate
from ultrasam.evaluate.interactive import (
    NOT_APPLICABLE,
    NocSettings,
    instance_record,
    noc,
    simulate,
    summarise_noc,
)
from ultrasam.evaluate.metrics import iou
from ultrasam.evaluate.protocol import ALL_PROTOCOLS, PROTOCOLS, ModelRunner

from . import _rle

SIZE = 40
# Three 10 x 10 objects (100 px each) in a 40 x 40 image: rows, cols.
BOXES = {"A": (2, 2), "B": (2, 20), "C": (22, 2)}
# What the oracle returns after click 1, 2, ...: the first n pixels of the object in raster
# order, so IoU = n / 100 exactly. The last entry repeats when the sequence runs out.
SEQUENCES = {"A": [50, 80, 86, 88, 90, 95, 100], "B": [60], "C": [30, 100]}


def _gt(name: str) -> np.ndarray:
    r, c = BOXES[name]
    m = np.zeros((SIZE, SIZE), bool)
    m[r:r + 10, c:c + 10] = True
    return m


def _first_pixels(name: str, n: int) -> np.ndarray:
    r, c = BOXES[name]
    m = np.zeros((SIZE, SIZE), bool)
    flat = np.zeros(100, bool)
    flat[:n] = True
    m[r:r + 10, c:c + 10] = flat.reshape(10, 10)
    return m


class Oracle:
    """Returns the known mask sequence of the object holding an instance's first click, and
    records what the protocol passed in."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = {k: [] for k in BOXES}

    def _owner(self, xy: np.ndarray) -> str:
        x, y = int(xy[0]), int(xy[1])
        return next(k for k in BOXES if _gt(k)[y, x])

    def __call__(self, points: np.ndarray, labels: np.ndarray, previous: Sequence[Any] | None,
                 multimask: bool) -> tuple[np.ndarray, Sequence[Any]]:
        assert points.ndim == 3 and points.shape[2] == 2 and labels.shape == points.shape[:2]
        masks, low = [], []
        for b in range(points.shape[0]):
            name = self._owner(points[b, 0])
            step = len(self.calls[name])
            self.calls[name].append({"points": points[b].copy(), "labels": labels[b].copy(),
                                     "previous": None if previous is None else previous[b],
                                     "multimask": multimask})
            seq = SEQUENCES[name]
            masks.append(_first_pixels(name, seq[min(step, len(seq) - 1)]))
            low.append((name, step))       # an opaque token standing for the low-res logits
        return np.stack(masks), low


def _simulate(settings: NocSettings | None = None) -> tuple[list[Any], Oracle]:
    oracle = Oracle()
    traces = simulate(oracle, [_gt(k) for k in BOXES], np.random.default_rng(0),
                      settings or NocSettings())
    return traces, oracle


def test_noc_arithmetic_on_a_known_sequence() -> None:
    traces, oracle = _simulate()
    a, b, c = traces
    # A reaches 0.86 at click 3 and 0.90 at click 5, and stops there (0.90 reached, 5 clicks).
    assert a.ious == pytest.approx([0.50, 0.80, 0.86, 0.88, 0.90])
    assert len(oracle.calls["A"]) == 5 and len(a.clicks) == 5
    # B never passes 0.60: 20 clicks, a failure at both thresholds.
    assert b.ious == pytest.approx([0.60] * 20) and len(oracle.calls["B"]) == 20
    # C is perfect after click 2: no further click, its IoU of 1 carried to click 5.
    assert c.ious == pytest.approx([0.30, 1.0, 1.0, 1.0, 1.0])
    assert len(oracle.calls["C"]) == 2 and len(c.clicks) == 2
    s = NocSettings()
    recs = [instance_record(t, s) for t in traces]
    assert [(r["noc_85"], r["failed_85"], r["noc_90"], r["failed_90"]) for r in recs] == [
        (3, False, 5, False), (20, True, 20, True), (2, False, 2, False)]
    summary = summarise_noc(recs, s)
    assert summary["noc_85"] == pytest.approx((3 + 20 + 2) / 3)
    assert summary["noc_90"] == pytest.approx((5 + 20 + 2) / 3)
    assert summary["failures_85"] == summary["failures_90"] == 1
    assert summary["miou_at_1"] == pytest.approx((0.50 + 0.60 + 0.30) / 3)
    assert summary["miou_at_3"] == pytest.approx((0.86 + 0.60 + 1.0) / 3)
    assert summary["miou_at_5"] == pytest.approx((0.90 + 0.60 + 1.0) / 3)
    assert summary["n_instances"] == 3 and summary["mean_clicks_given"] == pytest.approx(9)


def test_clicks_follow_the_error_regions_and_the_mask_prompt() -> None:
    _, oracle = _simulate()
    for name, calls in oracle.calls.items():
        gt = _gt(name)
        # Click 1: positive, at the interior-most pixels of the object; multimask, no mask prompt.
        (x, y), label = calls[0]["points"][0], calls[0]["labels"][0]
        assert label == 1 and calls[0]["multimask"] and calls[0]["previous"] is None
        assert y in (BOXES[name][0] + 4, BOXES[name][0] + 5)
        for step in range(1, len(calls)):
            seq = SEQUENCES[name]
            before = _first_pixels(name, seq[min(step - 1, len(seq) - 1)])
            # All clicks so far are passed again; the newest is in the error region it fixes.
            assert len(calls[step]["points"]) == step + 1
            assert np.array_equal(calls[step]["points"][:step], calls[step - 1]["points"])
            (x, y), label = calls[step]["points"][-1], calls[step]["labels"][-1]
            region = (gt & ~before) if label == 1 else (before & ~gt)
            assert region[int(y), int(x)]
            assert not calls[step]["multimask"]
            assert calls[step]["previous"] == (name, step - 1)
    # A's click 2 after the top 5 rows: the missed bottom half, on its middle row.
    (x, y), label = oracle.calls["A"][1]["points"][-1], oracle.calls["A"][1]["labels"][-1]
    assert label == 1 and y == BOXES["A"][0] + 7


def test_no_mask_prompt_and_fewer_clicks() -> None:
    traces, oracle = _simulate(NocSettings(max_clicks=3, mask_prompt=False))
    assert all(call["previous"] is None for calls in oracle.calls.values() for call in calls)
    assert [len(t.ious) for t in traces] == [3, 3, 3]
    recs = [instance_record(t, NocSettings(max_clicks=3)) for t in traces]
    assert "iou_at_5" not in recs[0] and recs[0]["iou_at_3"] == pytest.approx(0.86)
    assert [r["noc_90"] for r in recs] == [3, 3, 2] and recs[0]["failed_90"]
    assert noc([0.5, 0.9], 0.9, 20) == (2, True) and noc([0.5], 0.9, 20) == (20, False)


def test_settings_are_validated() -> None:
    for bad in ({"max_clicks": 0}, {"max_clicks": 1000}, {"max_clicks": 2.5},
                {"thresholds": (1.5,)}, {"miou_at": (0,)}):
        with pytest.raises(ValueError):
            NocSettings(**bad)  # type: ignore[arg-type]


def test_cli_choices_match_the_library() -> None:
    assert PROTOCOL_CHOICES == ALL_PROTOCOLS and set(PROTOCOLS) < set(ALL_PROTOCOLS)


# ------------------------------------------------------------------- real models, phantom

def _phantom_coco(folder: Path, n: int = 2, size: int = 96) -> Path:
    """A per-dataset COCO folder of ``n`` seeded phantoms (every instance of each)."""
    from ultrasam.data.synthetic import make_phantom

    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        ph = make_phantom(seed=i, size=size, kind="mixed")
        name = f"PH__{i:05d}.png"
        cv2.imwrite(str(folder / "images" / name), ph.image)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size,
                       "split": "val", "group": None})
        for inst in ph.instances:
            x0, y0, x1, y1 = inst.box
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "segmentation": _rle(inst.mask), "area": int(inst.mask.sum()),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    coco = {"info": {"dataset": "PH"}, "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "structure", "supercategory": "x"}]}
    path = folder / "annotations.coco.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


# Both families: SAM-style (tiny ViT) and early fusion, the latter shrunk for the default run
# (the full default-size FusionNet costs ~10x more per click) and at full size when slow.
VARIANTS = [("tiny", {}),
            ("fusion", {"img_size": 64, "conv_dims": (8, 16, 24, 32), "conv_depths": (1, 1, 1, 1),
                        "prompt_embed_dim": 16, "iou_head_hidden_dim": 16}),
            pytest.param("fusion", {}, marks=pytest.mark.slow, id="fusion-full")]


@pytest.mark.parametrize(("variant", "overrides"), VARIANTS)
def test_mechanics_with_random_weights(variant: str, overrides: dict[str, Any]) -> None:
    import torch

    from ultrasam.config import get_config
    from ultrasam.data.synthetic import make_phantom
    from ultrasam.modeling import build_model

    torch.manual_seed(0)
    runner = ModelRunner(build_model(get_config(variant, **overrides)).eval())
    ph = make_phantom(seed=3, size=96, kind="mixed")
    gts = [inst.mask for inst in ph.instances]
    assert len(gts) >= 2                      # several instances: the rounds are batched
    runner.set_image(ph.image)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def decode(points: np.ndarray, labels: np.ndarray, previous: Sequence[Any] | None,
               multimask: bool) -> tuple[np.ndarray, Sequence[Any]]:
        mask_input = None if previous is None else torch.stack(list(previous))
        out = runner.decode(points=points, labels=labels, mask_input=mask_input,
                            multimask=multimask)
        seen.append((points, labels, out.masks))
        return out.masks, list(out.low_res)

    settings = NocSettings(max_clicks=5)
    traces = simulate(decode, gts, np.random.default_rng(0), settings)
    assert len(seen) <= settings.max_clicks
    # Replay: each instance's click k + 1 lies in the error region of its mask after click k,
    # positive in a missed region, negative in a false one; IoUs are those of the masks.
    masks = [np.zeros_like(g) for g in gts]
    for points, labels, out in seen:
        n = points.shape[1]
        for b in range(points.shape[0]):
            # Identify the instance by its clicks so far (the first n of its trace).
            k = next(i for i, t in enumerate(traces) if len(t.clicks) >= n and np.allclose(
                [c[:2] for c in t.clicks[:n]], points[b]))
            (x, y), label = points[b, -1], labels[b, -1]
            assert 0 <= x < ph.image.shape[1] and 0 <= y < ph.image.shape[0]
            region = (gts[k] & ~masks[k]) if label == 1 else (masks[k] & ~gts[k])
            assert region[int(y), int(x)]
            masks[k] = out[b]
            assert traces[k].ious[n - 1] == pytest.approx(iou(out[b], gts[k]))
    for t in traces:
        assert 1 <= len(t.clicks) <= len(t.ious) <= settings.max_clicks


def test_evaluate_reports_noc_beside_the_protocols(tmp_path: Path) -> None:
    import torch

    from ultrasam import build_model, save_native

    torch.manual_seed(0)
    ckpt = save_native(build_model("tiny"), tmp_path / "ck" / "tiny")
    data = _phantom_coco(tmp_path / "PH", n=1, size=64)
    out = tmp_path / "eval"
    result = evaluate([ckpt], data, out, protocols=("box", "noc"), baselines=("ellipse",),
                      sweeps=False)
    assert {(m["checkpoint"], m["protocol"]) for m in result["metrics"]} == {
        ("tiny", "box"), ("baseline-ellipse", "box")}
    (m,) = result["interactive"]
    assert m["protocol"] == "noc" and m["settings"]["max_clicks"] == 20
    assert m["settings"]["mask_prompt"] is True
    for key in ("noc_85", "noc_90", "failures_85", "failures_90", "miou_at_1", "miou_at_3",
                "miou_at_5", "noc_90_ci"):
        assert key in m["all"] and key in m["by_dataset"]["PH"]
    assert 1 <= m["all"]["noc_85"] <= m["all"]["noc_90"] <= 20
    assert m["timing"]["clicks"] > 0 and m["timing"]["clicks_per_s"] > 0
    saved = json.loads((out / "tiny" / "noc" / "metrics.json").read_text())
    assert saved["all"]["noc_90"] == pytest.approx(m["all"]["noc_90"])
    instances = list(csv.DictReader((out / "tiny" / "noc" / "instances.csv").open()))
    assert len(instances) == m["n_instances"] == len(
        json.loads((out / "tiny" / "box" / "predictions.coco.json").read_text()))
    traces = [json.loads(line) for line in
              (out / "tiny" / "noc" / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == m["n_instances"]
    assert all(len(t["clicks"]) <= 20 and len(t["ious"]) <= 20 for t in traces)
    # Per-dataset table: the model's rows, and the ellipse said to take no clicks.
    rows = list(csv.DictReader((out / "interactive.csv").open()))
    assert [(r["checkpoint"], r["dataset"]) for r in rows] == [
        ("tiny", "all"), ("tiny", "PH"), ("baseline-ellipse", "all")]
    assert rows[2]["note"] == NOT_APPLICABLE and rows[2]["noc_90"] == ""
    assert json.loads((out / "interactive.json").read_text())[2]["noc_90"] is None
    md = (out / "summary.md").read_text()
    assert "## Interactive: corrective clicks (NoC)" in md and "noc_90" in md
    assert "Not applicable to baseline-ellipse" in md


def test_cli_noc_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from ultrasam import build_model, save_native

    torch.manual_seed(0)
    ckpt = save_native(build_model("tiny"), tmp_path / "ck" / "tiny")
    data = _phantom_coco(tmp_path / "PH", n=1, size=64)
    out = tmp_path / "cli"
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                     str(out), "--protocols", "noc", "--max-clicks", "3", "--no-mask-prompt",
                     "--no-sweeps", "--baselines", ""]) == 0
    printed = capsys.readouterr().out
    assert "tiny noc: NoC@85" in printed and "clicks/s" in printed
    m = json.loads((out / "tiny" / "noc" / "metrics.json").read_text())
    assert m["settings"] == {"max_clicks": 3, "mask_prompt": False, "thresholds": [0.85, 0.9],
                             "miou_at": [1, 3, 5]}
    assert "miou_at_5" not in m["all"] and not (out / "tiny" / "box").exists()
    assert cli_main(["evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--out",
                     str(out), "--max-clicks", "3"]) == 1
    assert "--max-clicks" in capsys.readouterr().err
