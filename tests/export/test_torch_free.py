"""Deployment without PyTorch: OnnxPredictor and `ultrasam predict --backend onnx` run in a
process where ``import torch`` fails, and give the PyTorch Predictor's masks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ultrasam.data.synthetic import make_phantom
from ultrasam.inference.predictor import Predictor

SCRIPT = r'''
import importlib.machinery, json, sys
import numpy as np

class NoTorch(importlib.machinery.PathFinder):
    """The path finder, except that torch is not found: as if not installed."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            return None
        return super().find_spec(name, path, target)

sys.meta_path[:] = [NoTorch if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
folder, image, out = sys.argv[1], sys.argv[2], sys.argv[3]
cases = json.loads(sys.argv[4])
from ultrasam.inference.onnx import OnnxPredictor

p = OnnxPredictor(folder, threads=1)
p.set_image(image)
results = {}
for i, case in enumerate(cases):
    args = {k: np.array(v) if isinstance(v, list) else v for k, v in case.items()}
    masks, scores, low = p.predict(**args)
    results[f"masks{i}"], results[f"scores{i}"] = masks, scores
np.savez(out + "/onnx.npz", **results)
from ultrasam.cli import main
code = main(["predict", image, "--backend", "onnx", "--checkpoint", folder,
             "--box", "20,30,100,120", "--out", out + "/cli", "--quiet"])
print(json.dumps({"code": code, "torch": sorted(m for m in sys.modules
                                                if m.split(".")[0] == "torch")}))
'''

CASES = [{"box": [20, 30, 100, 120], "multimask_output": False},
         {"point_coords": [[65, 80]], "point_labels": [1]},
         {"point_coords": [[65, 80], [10, 10]], "point_labels": [1, 0], "refine": True}]


def test_runs_without_torch(exported, tmp_path: Path) -> None:
    model, folder = exported("fusion")
    rgb = make_phantom(seed=3, size=160).image[:, :130]
    path = tmp_path / "scan.png"
    Image.fromarray(rgb).save(path)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(path), str(tmp_path),
                        json.dumps(CASES)], capture_output=True, text=True, timeout=600,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": []}
    got = np.load(tmp_path / "onnx.npz")
    pred = Predictor(model)
    pred.set_image(str(path))
    for i, case in enumerate(CASES):
        args = {k: np.array(v) if isinstance(v, list) else v for k, v in case.items()}
        want, scores, _ = pred.predict(**args)
        logits = pred.predict(**args, return_logits=True)[0]
        assert got[f"masks{i}"].shape == want.shape
        assert ((got[f"masks{i}"] == want) | (np.abs(logits) < 1e-3)).all()
        np.testing.assert_allclose(got[f"scores{i}"], scores, rtol=1e-4, atol=1e-6)
    # The command line wrote the box prompt's single mask, as the PyTorch path does.
    record = json.loads((tmp_path / "cli" / "results.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok"
    mask = np.asarray(Image.open(tmp_path / "cli" / record["objects"][0]["mask"])) > 0
    want = pred.predict(box=np.array([20, 30, 100, 120]), multimask_output=False)[0][0]
    logits = pred.predict(box=np.array([20, 30, 100, 120]), multimask_output=False,
                          return_logits=True)[0][0]
    assert ((mask == want) | (np.abs(logits) < 1e-3)).all()
