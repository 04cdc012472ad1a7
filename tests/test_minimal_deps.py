"""The model, predictor, training and evaluation run with only the core dependencies.

A GPU machine may have nothing beyond torch, numpy, pillow, opencv-python-headless,
pycocotools and safetensors. A subprocess blocks every optional package (PyYAML, tqdm, SciPy,
TensorBoard, matplotlib, pydicom, nibabel, h5py, SimpleITK) at import and runs the whole path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r'''
import importlib.machinery, json, sys
from pathlib import Path
BLOCKED = {"yaml", "tqdm", "scipy", "tensorboard", "matplotlib", "pydicom", "nibabel", "h5py",
           "SimpleITK", "gdcm"}

class NotInstalled(importlib.machinery.PathFinder):
    """The path finder, except that blocked packages are not found: as if not installed."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)

sys.meta_path[:] = [NotInstalled if f is importlib.machinery.PathFinder else f
                    for f in sys.meta_path]
import numpy as np
import torch
torch.set_num_threads(1)
import ultrasam
from ultrasam.data.coco import CocoWriter, write_json
from ultrasam.data.registry import all_sources
from ultrasam.data.synthetic import make_phantom
from ultrasam.train import load_config, train
from ultrasam.evaluate.protocol import evaluate

root = Path(sys.argv[1])
assert len(all_sources()) == 45  # listing sources needs no optional package
w = CocoWriter("SYN", ["cyst"], images_dir=root / "SYN" / "images")
for seed in range(4):
    ph = make_phantom(seed=seed, size=96, geometry="linear", kind="cyst")
    w.add_image(ph.image, {"cyst": ph.masks["cyst"]}, source=f"c{seed}",
                split="val" if seed == 3 else "train")
write_json(root / "SYN" / "annotations.coco.json", w.to_coco())
config = {"model": {"variant": "tiny"},
          "data": {"paths": [str(root / "SYN" / "annotations.coco.json")], "split": "train",
                   "images_per_batch": 2},
          "run": {"out_dir": str(root / "run"), "steps": 3, "checkpoint_every": 3,
                  "resume": "never"}}
(root / "train.json").write_text(json.dumps(config))
result = train(load_config(root / "train.json", ["optim.lr=0.001"]))
model = ultrasam.load_model(result["export"])
predictor = ultrasam.Predictor(model)
predictor.set_image(make_phantom(seed=3, size=96).image)
masks, scores, _ = predictor.predict(box=np.array([10, 10, 60, 60]), refine=True)
assert masks.shape == (1, 96, 96)
out = evaluate([result["export"]], root / "SYN" / "annotations.coco.json", root / "eval",
               split="val", baselines=("ellipse",), sweeps=False)
assert (root / "eval" / "summary.md").is_file()
blocked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"ok": True, "loaded_optional": blocked}))
'''


def test_core_dependencies_suffice(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report == {"ok": True, "loaded_optional": []}
