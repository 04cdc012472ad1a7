"""The bundled default model: it loads, segments a phantom from a box, beats the inscribed
ellipse on a fixed MMOTU-2D val subset (when ../shared/data is present), and the demo runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ultrasam.inference.predictor import Predictor
from ultrasam.modeling import FusionNet
from ultrasam.weights.checkpoints import DEFAULT_MODEL_DIR, load_model

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "us-corpus"
N_SUBSET = 50


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> FusionNet:
    m = load_model()
    assert isinstance(m, FusionNet)
    return m


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_bundled_folder_is_complete_and_small() -> None:
    weights = DEFAULT_MODEL_DIR / "model.safetensors"
    assert weights.stat().st_size <= 16 * 2**20
    meta = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert meta["model"]["variant"] == "fusion" and meta["model"]["encoder"] == "fusion"
    card = (DEFAULT_MODEL_DIR / "README.md").read_text()
    for needed in ("not a medical device", "MMOTU", "ellipse", "CPU"):
        assert needed.lower() in card.lower()


def test_loads_in_eval_mode_with_fp16_weights_as_float32(model: FusionNet) -> None:
    assert not model.training
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all()
               for p in model.parameters())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_phantom_lesion_from_a_box(model: FusionNet, phantom_lesion: Any, seed: int) -> None:
    image, lesion = phantom_lesion(seed)  # the largest cyst, boxed as a user would
    ys, xs = np.nonzero(lesion)
    pred = Predictor(model)
    pred.set_image(image)
    masks, _, _ = pred.predict(box=[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1],
                               multimask_output=False)
    assert dice(masks[0], lesion) >= 0.8


def _mmotu_subset() -> list[tuple[np.ndarray, list[np.ndarray]]]:
    from ultrasam.data.dataset import CocoDataset

    ds = CocoDataset(CORPUS / "MMOTU_2d", split="val")
    usable = [i for i in range(len(ds)) if ds.entries[i].annotations]
    chosen = sorted(np.random.default_rng(0).permutation(usable)[:N_SUBSET].tolist())
    out = []
    for i in chosen:
        s = ds[i]
        out.append((s.image, [m for m in s.masks if m.sum() >= 12]))
    return out


@pytest.mark.skipif(not (CORPUS / "MMOTU_2d").is_dir(),
                    reason="../shared/data/us-corpus is absent: MMOTU-2D check skipped")
def test_beats_the_ellipse_on_mmotu_val_subset(model: FusionNet) -> None:
    from ultrasam.evaluate.baselines import ellipse_mask
    from ultrasam.evaluate.prompts import centroid_point

    box_d, ell_d, pt_d = [], [], []
    pred = Predictor(model)
    for image, masks in _mmotu_subset():
        pred.set_image(image)
        for gt in masks:
            ys, xs = np.nonzero(gt)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
            m, _, _ = pred.predict(box=box, multimask_output=False)
            box_d.append(dice(m[0], gt))
            xywh = (box[0], box[1], box[2] - box[0], box[3] - box[1])
            ell_d.append(dice(ellipse_mask(xywh, *gt.shape), gt))
            p = centroid_point(gt)
            m, s, _ = pred.predict(point_coords=p[None], point_labels=[1],
                                   multimask_output=True)
            pt_d.append(dice(m[int(np.argmax(s))], gt))
    assert np.mean(box_d) > np.mean(ell_d)
    # The bar. The bundled model (run 9) measures point 0.823 on this subset, box
    # 0.930 against the ellipse's 0.917 (model card, "Targets").
    assert np.mean(pt_d) >= 0.80


def test_demo_writes_mask_overlay_and_json(tmp_path: Path) -> None:
    from ultrasam.inference.demo import DEMO_BOX, run_demo

    assert run_demo(tmp_path) == 0
    record = json.loads((tmp_path / "us1_lymph_node.json").read_text())
    mask = np.array(__import__("PIL.Image", fromlist=["Image"]).open(
        tmp_path / "us1_lymph_node.mask.png")) > 0
    assert (tmp_path / "us1_lymph_node.overlay.png").is_file()
    x0, y0, x1, y1 = (int(v) for v in DEMO_BOX)
    inside = mask[y0:y1, x0:x1].sum()
    # A sensible mask: most of it inside the box, filling a good part of it.
    assert inside >= 0.95 * mask.sum() and inside >= 0.3 * (x1 - x0) * (y1 - y0)
    assert json.dumps(record)  # valid JSON with finite numbers
