"""``scripts/iou_selection.py`` on a synthetic val split and a small random FusionNet: its
numbers are internally consistent (the oracle bounds every rule, counts add up)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ultrasam.config import get_config
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.synthetic import make_phantom
from ultrasam.modeling import build_model
from ultrasam.weights.checkpoints import save_native

REPO = Path(__file__).resolve().parents[2]
SMALL = {"img_size": 64, "conv_dims": (8, 16, 16, 16), "conv_depths": (1, 1, 1, 1),
         "prompt_embed_dim": 16, "iou_head_hidden_dim": 16}


def test_selection_numbers_are_consistent(tmp_path: Path) -> None:
    w = CocoWriter("SYN", ["cyst"], images_dir=tmp_path / "SYN" / "images")
    for seed in range(5):
        ph = make_phantom(seed=seed, size=80, geometry="linear", kind="cyst")
        w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"c{seed}", split="val")
    write_json(tmp_path / "SYN" / "annotations.coco.json", w.to_coco())
    torch.manual_seed(0)
    model = build_model(get_config("fusion", **SMALL)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random BatchNorm statistics and heads, so the outputs differ
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        for p in model.iou_head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    folder = save_native(model, tmp_path / "model", dtype=torch.float32)
    out = tmp_path / "sel.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "iou_selection.py"),
                    "--checkpoint", str(folder), "--data", str(tmp_path / "SYN"),
                    "--split", "val", "--threads", "1", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=300)
    r = json.loads(out.read_text())
    n = r["n_instances"]
    assert n >= 5 and r["frame_px"] == 64
    assert sum(r["kept_counts"]) == sum(r["best_counts"]) == n
    per_output = r["dice_multimask_output"]
    assert len(per_output) == 3
    oracle = r["dice_best_output_oracle"]
    assert oracle >= r["dice_kept_by_predicted_iou"] - 1e-6
    assert oracle >= max(per_output) - 1e-6
    assert min(per_output) - 1e-6 <= r["dice_kept_by_predicted_iou"] <= oracle + 1e-6
    assert 0 <= r["kept_is_best"] <= 1 and np.isfinite(r["predicted_vs_true_iou_corr"])
