"""CPU latency of the default model through the public Predictor, against the late-fusion
``small`` variant in the same run.

    python benchmarks/bench_default_model.py [--checkpoint DIR] [--runs 40] [--threads 2]

Measured on a 384 x 300 grayscale phantom (``ultrasam.data.synthetic``), medians of ``--runs``
calls after warm-up, candidates interleaved:

- ``first``: ``set_image`` + the first prompt (a box) — what a user waits for after opening
  an image (target <= 150 ms with 2 threads);
- ``next_box`` / ``next_point`` / ``next_clicks``: each further prompt on the same image (a box;
  one point; three points + the previous mask) (target <= 50 ms);
- ``refine``: a point prompt with ``refine=True`` (two passes).

``--checkpoint`` defaults to the bundled model (random ``fusion`` weights when none is bundled:
latency does not depend on the weights' values). Writes
``benchmarks/results/default_model_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _reference import cpu_name, times_ms  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "default_model_latency.json"))
    args = ap.parse_args()

    import numpy as np
    import torch

    from ultrasam.data.synthetic import make_phantom
    from ultrasam.inference.predictor import Predictor
    from ultrasam.modeling import build_model
    from ultrasam.weights.checkpoints import DEFAULT_MODEL_DIR, load_model

    torch.set_num_threads(args.threads)
    if args.checkpoint or (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        fusion = load_model(args.checkpoint)
        fusion_name = str(args.checkpoint or "bundled default")
    else:
        torch.manual_seed(0)
        fusion, fusion_name = build_model("fusion").eval(), "fusion (random weights)"
    torch.manual_seed(0)
    small = build_model("small").eval()
    phantom = make_phantom(seed=3, size=384, kind="cyst")
    image = np.ascontiguousarray(phantom.image[:300])
    ys, xs = np.nonzero(phantom.masks[phantom.structures[0]][:300])
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    centre = np.array([[xs.mean(), ys.mean()]])
    clicks = np.array([[xs.mean(), ys.mean()], [xs.min() + 2, ys.mean()], [5.0, 5.0]])

    results: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for name, model in (("default", fusion), ("small_late_fusion", small)):
            pred = Predictor(model)
            pred.set_image(image)
            _, _, low = pred.predict(box=box, multimask_output=False)

            def first() -> None:
                pred.set_image(image)
                pred.predict(box=box, multimask_output=False)

            cases = {
                "first": first,
                "next_box": lambda: pred.predict(box=box, multimask_output=False),
                "next_point": lambda: pred.predict(point_coords=centre, point_labels=[1]),
                "next_clicks": lambda: pred.predict(point_coords=clicks,
                                                    point_labels=[1, 1, 0], mask_input=low,
                                                    multimask_output=False),
                "refine": lambda: pred.predict(point_coords=centre, point_labels=[1],
                                               refine=True),
            }
            results[name] = {}
            for case, fn in cases.items():
                pred.set_image(image)
                results[name][case] = statistics.median(times_ms(fn, args.runs))
    record = {
        "command": "python benchmarks/bench_default_model.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
        "load_average_after": os.getloadavg(), "runs": args.runs, "image": "384x300 phantom",
        "default_model": fusion_name, "median_ms": results,
        "targets_ms": {"first": 150, "next_box": 50, "next_point": 50, "next_clicks": 50},
    }
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
