"""The README's first command: segment an embedded phantom with the bundled default model."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def run_demo(out_dir: str | Path) -> int:
    """Write a synthetic B-mode phantom, segment its lesion from a box with the default model,
    and save the mask and overlay. Returns a process exit code (non-zero when no default
    model is bundled: random weights are never run as if they were a model)."""
    from .checkpoints import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        print("ultrasam demo: no trained default model is bundled with this version yet "
              "(it is trained on a GPU machine and bundled in a later release); "
              "run `ultrasam predict IMAGE --checkpoint CKPT --box X0,Y0,X1,Y1 --out DIR` "
              "with your own checkpoint meanwhile.", file=sys.stderr)
        return 3
    import cv2

    from .segment import Prompt, predict_files
    from .synthetic import make_phantom

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom(seed=7, size=256, kind="cyst")
    image_path = out / "phantom.png"
    cv2.imwrite(str(image_path), phantom.image)
    name = phantom.structures[0]
    ys, xs = np.nonzero(phantom.masks[name])
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    records = predict_files([image_path], out, Prompt(box=box))
    r = records[0]
    print(f"segmented {image_path} from box {box}: {r['area_px']} px, score "
          f"{max(r['scores']):.3f}; wrote {out}/phantom.mask.png and phantom.overlay.png")
    return 0
