"""The README's first command: segment an embedded real ultrasound image with the bundled model.

The image is US1 of the DICOM WG-04 compression test set (a GE power-Doppler scan of two
lymph nodes, published by NEMA for testing DICOM software and redistributed in pydicom's
example files as ``examples_jpeg2k.dcm``), stored here as a PNG. The demo draws a box around
the left lymph node, as a user would, and writes the mask, an overlay and the JSON record.

The scan carries a colour power-Doppler overlay; the default model was trained on B-mode
(grayscale) images and treats colour flow as "not the structure", so the demo segments the
scan's luminance (ITU-R 601), as a user should do with Doppler frames (model card, limitations).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEMO_IMAGE = Path(__file__).parents[1] / "demo_data" / "us1_lymph_node.png"
# XYXY pixels of the left lymph node in DEMO_IMAGE (640 x 480), drawn by eye around the
# hypoechoic oval, as a user would drag it.
DEMO_BOX = (96.0, 162.0, 304.0, 278.0)


def run_demo(out_dir: str | Path) -> int:
    """Segment the embedded scan from ``DEMO_BOX`` with the default model; write
    ``<out>/us1_lymph_node.{mask,overlay}.png`` and ``.json``. Returns a process exit code
    (non-zero when no default model is bundled: random weights are never run as a model)."""
    from ..weights.checkpoints import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        print("ultrasam demo: no trained default model is bundled with this installation; "
              "run `ultrasam predict IMAGE --checkpoint CKPT --box X0,Y0,X1,Y1 --out DIR` "
              "with your own checkpoint.", file=sys.stderr)
        return 3
    from PIL import Image

    from .predict_files import Prompt, predict_files

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image_path = out / DEMO_IMAGE.name
    with Image.open(DEMO_IMAGE) as scan:
        scan.convert("L").save(image_path)  # B-mode luminance (see the module docstring)
    records = predict_files([image_path], out, Prompt(box=DEMO_BOX))
    r = records[0]
    stem = image_path.stem
    print(f"segmented {image_path} (real ultrasound, B-mode luminance: lymph nodes, DICOM "
          f"WG-04 US1) from "
          f"box {DEMO_BOX} with the default model: {r['area_px']} px, predicted IoU "
          f"{max(r['scores']):.3f}")
    for suffix in ("mask.png", "overlay.png", "json"):
        print(f"wrote {out / f'{stem}.{suffix}'}")
    return 0
