"""bf16 against fp32 inference on the CPU, same model, same run: speed per prompt and masks.

    python benchmarks/bench_precision.py [--checkpoint DIR] [--threads 1] [--runs 15]
        [--data ../shared/data/us-corpus/MMOTU_2d --split val --images 120]

Speed: the decoder (what each prompt of ``ultrasam serve`` costs) on a 384 x 384 phantom, one
click + one negative click per prompt, batches of 1, 4 and 8 prompts, medians of ``--runs``
calls; ``fp32`` (the model as loaded), ``bf16`` (autocast, BatchNorm folded into the
convolutions, weights in channels_last: what ``ultrasam.inference.precision.prepare_model``
does) — interleaved per batch size. Also ``set_image``.

Masks: on ``--data`` (a corpus dataset; skipped when absent), each instance's exact GT box and
GT centroid click (multimask, best predicted IoU kept, as ``ultrasam evaluate``), decoded in
both precisions: mean Dice against the GT for each, and the Dice between the two masks (mean
and minimum). Writes ``benchmarks/results/precision.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _reference import cpu_name, times_ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: as each of the server's two model threads)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data"
                    / "us-corpus" / "MMOTU_2d")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "precision.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    from ultrasam.data.synthetic import make_phantom
    from ultrasam.evaluate.metrics import dice
    from ultrasam.inference.precision import (
        cpu_has_native_bf16,
        precision_context,
        prepare_model,
    )
    from ultrasam.inference.predictor import Predictor
    from ultrasam.weights.checkpoints import load_model

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    fp32_model = load_model(args.checkpoint).eval()
    bf16_model = prepare_model(copy.deepcopy(fp32_model), "bf16")
    predictors = {"fp32": Predictor(fp32_model), "bf16": Predictor(bf16_model)}
    image = make_phantom(seed=3, size=384, kind="cyst").image

    speed: dict[str, dict[str, float]] = {"fp32": {}, "bf16": {}}
    for name, pred in predictors.items():
        with precision_context(name):
            speed[name]["set_image_ms"] = statistics.median(
                times_ms(lambda p=pred: p.set_image(image), args.runs))
    rng = np.random.default_rng(0)
    for batch in (1, 4, 8):
        prompts = {name: [pred.prepare_prompt(
            np.array([[rng.uniform(120, 260), rng.uniform(120, 260)], [20.0, 30.0]]),
            np.array([1, 0]), None, multimask_output=False) for _ in range(batch)]
            for name, pred in predictors.items()}
        runs: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(args.runs):  # interleaved: drifts in machine load hit both alike
            for name, pred in predictors.items():
                with precision_context(name):
                    runs[name] += times_ms(
                        lambda p=pred, q=prompts[name]: p.predict_prepared(q), 1, warmup=1)
        for name, ms in runs.items():
            speed[name][f"decode_ms_per_prompt_batch{batch}"] = round(
                statistics.median(ms) / batch, 2)
    speedup = {k: round(speed["fp32"][k] / speed["bf16"][k], 2) for k in speed["fp32"]}

    masks: dict[str, object] = {"skipped": f"{args.data} is absent"}
    if args.data.is_dir():
        from ultrasam.evaluate import prompts as P
        from ultrasam.evaluate.coco_eval import load_ground_truth
        from ultrasam.evaluate.files import read_image

        gt = load_ground_truth(args.data, split=args.split, max_images=args.images, seed=0)
        rows = []
        for info in gt.images:
            img = read_image(info.path, info.height, info.width)
            for name, pred in predictors.items():
                with precision_context(name):
                    pred.set_image(img)
            for inst in info.instances:
                g = inst.mask(info.height, info.width)
                if not P.is_promptable(g, P.MIN_PROMPT_AREA):
                    continue
                out = {}
                for name, pred in predictors.items():
                    with precision_context(name):
                        mb, _, _ = pred.predict(box=P.gt_box_xyxy(inst.bbox),
                                                multimask_output=False)
                        mp, ip, _ = pred.predict(P.centroid_point(g)[None], np.array([1]),
                                                 multimask_output=True)
                    out[name] = (mb[0], mp[int(np.argmax(ip))])
                rows.append([dice(out["fp32"][0], g), dice(out["bf16"][0], g),
                             dice(out["fp32"][1], g), dice(out["bf16"][1], g),
                             dice(out["fp32"][0], out["bf16"][0]),
                             dice(out["fp32"][1], out["bf16"][1])])
        r = np.array(rows)
        masks = {"data": f"{args.data.name} {args.split}, {len(gt.images)} images (seeded)",
                 "instances": len(rows),
                 "box_dice": {"fp32": round(float(r[:, 0].mean()), 4),
                              "bf16": round(float(r[:, 1].mean()), 4)},
                 "point_dice": {"fp32": round(float(r[:, 2].mean()), 4),
                                "bf16": round(float(r[:, 3].mean()), 4)},
                 "fp32_vs_bf16_mask_dice": {
                     "box_mean": round(float(r[:, 4].mean()), 4),
                     "box_min": round(float(r[:, 4].min()), 4),
                     "point_mean": round(float(r[:, 5].mean()), 4),
                     "point_min": round(float(r[:, 5].min()), 4)}}
    record = {
        "command": "python benchmarks/bench_precision.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__,
        "threads": args.threads, "weights": str(args.checkpoint or "bundled default model"),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
        "speed_ms": speed, "speedup_bf16": speedup, "masks": masks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: record[k] for k in ("speed_ms", "speedup_bf16", "masks")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
