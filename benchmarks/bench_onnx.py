"""PyTorch vs ONNX Runtime (fp32) vs ONNX Runtime int8 on the CPU, and int8's accuracy drift.

Speed (same run, interleaved so background load hits every backend alike; medians after
warm-up): ``set_image`` (resize, normalise, pad, encoder) on a 384 x 300 phantom, and the
per-prompt decoder (``predict`` with one box, single mask, at the original size) on the cached
embedding, through ``ultrasam.inference.predictor.Predictor`` and
``ultrasam.inference.onnx.OnnxPredictor`` with the same thread count. The 1-, 5- and 15-minute
load averages before and after are recorded
(the benchmark machine may be shared: rerun when the load is high).

Accuracy (``--accuracy N``): the first N images (by id) of MMOTU-2D ``split == "val"`` in
``../shared/data/us-corpus`` (the development benchmark); every instance prompted with its
ground-truth box (single mask) and with one interior point drawn by
``evaluate.prompts.random_interior_point`` (seed 0; the best of the three multimask outputs);
mean Dice of each backend against the ground truth and the change of ONNX fp32 and int8 from
PyTorch (target for int8: |delta| <= 0.005).

    python benchmarks/bench_onnx.py [--checkpoint CKPT | --variant fusion] [--threads 2]
        [--runs 20] [--accuracy 60]
writes benchmarks/results/onnx_<name>.json (name: the variant for random weights, else
"default" or the checkpoint's stem).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _reference import cpu_name, times_ms

from ultrasam.export.onnx_export import export_onnx
from ultrasam.inference.onnx import OnnxPredictor
from ultrasam.inference.predictor import Predictor

CORPUS = ROOT.parent / "shared" / "data" / "us-corpus" / "MMOTU_2d"


def load(args: argparse.Namespace) -> tuple[Any, str]:
    if args.variant:
        from ultrasam.modeling import build_model

        torch.manual_seed(0)
        return build_model(args.variant).eval(), args.variant
    from ultrasam.weights.checkpoints import load_model

    model = load_model(args.checkpoint)
    name = "default" if args.checkpoint is None else Path(args.checkpoint).stem
    return model, name


def speed(backends: dict[str, Any], rgb: np.ndarray, runs: int) -> dict[str, Any]:
    box = np.array([0.2 * rgb.shape[1], 0.25 * rgb.shape[0], 0.7 * rgb.shape[1],
                    0.8 * rgb.shape[0]])
    enc: dict[str, list[float]] = {k: [] for k in backends}
    dec: dict[str, list[float]] = {k: [] for k in backends}
    for _ in range(runs):  # interleaved rounds
        for name, pred in backends.items():
            enc[name] += times_ms(lambda p=pred: p.set_image(rgb), 1, warmup=1)
            dec[name] += times_ms(lambda p=pred: p.predict(box=box, multimask_output=False),
                                  3, warmup=1)
    out: dict[str, Any] = {}
    for name in backends:
        out[name] = {"set_image_ms": statistics.median(enc[name]),
                     "predict_box_ms": statistics.median(dec[name])}
    base = out["pytorch"]
    for name in backends:
        out[name]["set_image_speedup"] = base["set_image_ms"] / out[name]["set_image_ms"]
        out[name]["predict_speedup"] = base["predict_box_ms"] / out[name]["predict_box_ms"]
    return out


def accuracy(backends: dict[str, Any], n_images: int) -> dict[str, Any]:
    from pycocotools import mask as mask_utils

    from ultrasam.evaluate.metrics import dice
    from ultrasam.evaluate.prompts import gt_box_xyxy, image_rng, random_interior_point

    ann_path = CORPUS / "annotations.coco.json"
    if not ann_path.is_file():
        return {"skipped": f"{ann_path.relative_to(ROOT.parent)} not found"}
    coco = json.loads(ann_path.read_text())
    images = sorted((im for im in coco["images"] if im.get("split") == "val"),
                    key=lambda im: im["id"])[:n_images]
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    scores: dict[str, dict[str, list[float]]] = {k: {"box": [], "point": []} for k in backends}
    agree: dict[str, list[float]] = {k: [] for k in backends}
    from PIL import Image

    for im in images:
        rgb = np.asarray(Image.open(CORPUS / "images" / im["file_name"]).convert("RGB"))
        for pred in backends.values():
            pred.set_image(rgb)
        for k, a in enumerate(sorted(by_image.get(im["id"], []), key=lambda a: a["id"])):
            gt = mask_utils.decode(a["segmentation"]).astype(bool)
            box = gt_box_xyxy(a["bbox"])
            point = random_interior_point(gt, image_rng(0, im["id"], k))
            ref = None
            for name, pred in backends.items():
                m_box = pred.predict(box=box, multimask_output=False)[0][0]
                masks, s, _ = pred.predict(point_coords=point[None], point_labels=np.array([1]))
                m_pt = masks[int(np.argmax(s))]
                scores[name]["box"].append(dice(m_box, gt))
                scores[name]["point"].append(dice(m_pt, gt))
                if ref is None:
                    ref = m_box
                agree[name].append(float((m_box == ref).mean()))
    out: dict[str, Any] = {"images": len(images), "instances": len(scores["pytorch"]["box"])}
    for name in backends:
        out[name] = {f"dice_{p}": float(np.mean(v)) for p, v in scores[name].items()}
        out[name]["box_mask_pixel_agreement_with_pytorch"] = float(np.mean(agree[name]))
        for p in ("box", "point"):
            out[name][f"dice_{p}_delta"] = out[name][f"dice_{p}"] - out["pytorch"][f"dice_{p}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="checkpoint (default: the bundled default model)")
    src.add_argument("--variant", help="random weights of a variant (mechanics only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--accuracy", type=int, default=0, metavar="N",
                    help="MMOTU-2D val images for the int8 drift (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, name = load(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32")
        int8 = export_onnx(model, Path(tmp) / "int8", quantize="int8")
        sizes = {k: {g: p.stat().st_size for g, p in (("encoder", r.encoder),
                                                       ("decoder", r.decoder))}
                 for k, r in (("onnx_fp32", fp32), ("onnx_int8", int8))}
        backends = {"pytorch": Predictor(model),
                    "onnx_fp32": OnnxPredictor(fp32.out_dir, threads=args.threads),
                    "onnx_int8": OnnxPredictor(int8.out_dir, threads=args.threads)}
        from ultrasam.data.synthetic import make_phantom

        rgb = np.stack([make_phantom(seed=0, size=384).image[:, :300]] * 3, -1)
        with torch.no_grad():
            timing = speed(backends, rgb, args.runs)
            acc = (accuracy(backends, args.accuracy) if args.accuracy
                   else {"skipped": "--accuracy 0"})
    import onnxruntime

    result = {
        "benchmark": "bench_onnx", "model": name, "variant": model.config.variant,
        "weights": "random" if args.variant else "trained",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "threads": args.threads, "runs": args.runs,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "export_check_fp32": fp32.check, "export_check_int8": int8.check,
        "file_bytes": sizes, "speed": timing, "accuracy": acc}
    out = ROOT / "benchmarks" / "results" / f"onnx_{name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"speed": timing, "accuracy": acc}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
