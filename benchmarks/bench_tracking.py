"""Propagation through cine loops: per-frame Dice against two bounds, and frames per second.

Synthetic loops (``ultrasam.data.synthetic.make_cine``: moving, pulsating, deforming cysts and
hypoechoic lesions with persistent speckle, dropout frames and a shadowing calcification) have
the exact mask of every frame. On each loop, with the GT box given on frame 0 only:

- **tracked**: ``Tracker`` (the library defaults, or each ``--variants`` carry policy) prompted
  with frame 0's GT box, propagated to every frame;
- **upper bound**: the GT box of *every* frame given to the model (what a perfect box tracker
  would reach with this model);
- **lower bound**: frame 0's predicted mask copied to every frame (no tracking at all);

reported as per-frame Dice (mean, the worst frame, share of frames >= 0.9), with how well the
tracker's flags pick out its bad frames. Speed: a fresh tracker per loop (cold embedding
cache), wall time of ``add_prompt`` + ``propagate`` over all frames, encoding included, at
``--size`` px, ``--threads`` torch threads; also frames per CPU-second of this process
(``time.process_time``), which a busy shared machine distorts less than wall time (with
``--threads 1`` it is the single-core rate; with more threads it sums their time). pydicom's real 30-frame ultrasound cine is tracked
for speed too (``--strip`` also draws its overlay strip for the docs).

    python benchmarks/bench_tracking.py --checkpoint PATH   # or no flag: the default model
    python benchmarks/bench_tracking.py --random fusion --loops 2   # mechanics only
writes benchmarks/results/tracking.json (``--out``); ``--update-docs`` rewrites the table in
docs/tracking.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _reference import cpu_name

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "tracking.md"
MARK_START, MARK_END = "<!-- tracking-table:start -->", "<!-- tracking-table:end -->"
VARIANTS = {"logits+box": {}, "logits+box+point": {"carry_point": True},
            "box": {"carry_logits": False}, "logits": {"carry_box": False}}
# pydicom's apical four-chamber cine: a box around the left ventricle on frame 0.
PYDICOM_BOX = (155, 45, 205, 125)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def load(args: argparse.Namespace) -> tuple[Any, str]:
    from ultrasam.modeling import build_model
    from ultrasam.weights.checkpoints import load_model

    if args.random:
        torch.manual_seed(0)
        return build_model(args.random).eval(), f"random {args.random} (mechanics only)"
    return load_model(args.checkpoint), args.label or str(args.checkpoint or "default model")


def run_loop(model: Any, cine: Any, config: dict[str, Any]) -> dict[str, Any]:
    from ultrasam.inference.predictor import Predictor
    from ultrasam.inference.tracking import Tracker, TrackerConfig

    tracker = Tracker(Predictor(model), cine.frames, TrackerConfig(**config))
    t0, c0 = time.perf_counter(), time.process_time()
    tracker.add_prompt(0, box=cine.boxes[0])
    results = tracker.propagate()
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    d = [dice(r.mask, cine.masks[r.frame]) for r in results]
    flagged = [r.flagged for r in results]
    return {"dice": d, "flagged": flagged, "seconds": seconds, "cpu_s": cpu_s,
            "first_mask": results[0].mask,
            "encode_s": tracker.stats.encode_s, "decode_s": tracker.stats.decode_s}


def bounds(model: Any, cine: Any, first_mask: np.ndarray) -> tuple[list[float], list[float]]:
    from ultrasam.inference.predictor import Predictor

    predictor = Predictor(model)
    upper = []
    for k in range(len(cine.frames)):
        predictor.set_image(cine.frames[k])
        masks, _, _ = predictor.predict(box=cine.boxes[k], multimask_output=False)
        upper.append(dice(masks[0], cine.masks[k]))
    lower = [dice(first_mask, m) for m in cine.masks]
    return upper, lower


def summarise(values: list[list[float]]) -> dict[str, float]:
    flat = [v for vs in values for v in vs]
    return {"mean_dice": round(float(np.mean(flat)), 4),
            "worst_frame_dice": round(float(np.min(flat)), 4),
            "frames_dice_ge_0_9": round(float(np.mean(np.array(flat) >= 0.9)), 4)}


def pydicom_cine(model: Any, strip: Path | None) -> dict[str, Any]:
    from pydicom import examples

    from ultrasam.inference.predictor import Predictor
    from ultrasam.inference.tracking import Tracker
    from ultrasam.io.video import open_frames

    frames = open_frames(examples.get_path("ybr_color"))
    tracker = Tracker(Predictor(model), frames)
    t0 = time.perf_counter()
    tracker.add_prompt(0, box=PYDICOM_BOX, name="left ventricle")
    results = tracker.propagate()
    seconds = time.perf_counter() - t0
    if strip is not None:
        draw_strip(frames, results, strip)
    area = [r.area_px for r in results]
    return {"frames": len(results), "size_hw": list(frames.size), "seconds": round(seconds, 3),
            "frames_per_second": round(len(results) / seconds, 2),
            "frame_period_s": float(frames.times_s[1]), "box_frame0": list(PYDICOM_BOX),
            "area_px_min_max": [min(area), max(area)],
            "fractional_area_change_px": round((max(area) - min(area)) / max(area), 4),
            "flagged_frames": [r.frame for r in results if r.flagged]}


def draw_strip(frames: Any, results: list[Any], path: Path) -> None:
    """Every fifth frame with its mask, the frame's time under it; one PNG."""
    import cv2

    from ultrasam.inference.track_files import overlay_frame

    tiles = []
    for r in results[::5]:
        tile = overlay_frame(frames[r.frame], [r.mask])[30:215, 60:280]
        text = f"{r.frame}: {frames.times_s[r.frame]:.2f}s"
        cv2.putText(tile, text, (5, 178), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
        tiles.append(tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR))


def table(res: dict[str, Any]) -> str:
    intro = (f"Model: {res['model']}; {res['loops']} loops x {res['frames_per_loop']} frames "
             f"at {res['size']} px; GT box on frame 0 only (tracked), on every frame (upper), "
             f"frame 0's mask copied (lower). Command: `{res['command']}`.")
    header = ("| policy | mean Dice | worst frame | frames >= 0.9 | frames/s wall (per CPU-s), "
              "median loop | flag precision / recall (Dice < 0.8) |")
    lines = [intro, "", header, "|---|---|---|---|---|---|"]
    if res["model"].startswith("random"):
        warning = ("**Random weights: these rows check that the benchmark runs; their Dice "
                   "values mean nothing.**")
        lines[1:1] = ["", warning]
    for name, v in res["tracked"].items():
        lines.append(f"| tracked, carry {name} | {v['mean_dice']} | {v['worst_frame_dice']} | "
                     f"{v['frames_dice_ge_0_9']} | {v['frames_per_second_median']} "
                     f"({v['frames_per_cpu_second_median']}) | "
                     f"{v['flag_precision']} / {v['flag_recall']} |")
    for name in ("upper", "lower"):
        v = res[name]
        label = "upper bound: GT box every frame" if name == "upper" \
            else "lower bound: frame 0 mask copied"
        lines.append(f"| {label} | {v['mean_dice']} | {v['worst_frame_dice']} | "
                     f"{v['frames_dice_ge_0_9']} | - | - |")
    return "\n".join(lines)


def update_docs(text: str) -> None:
    doc = DOC.read_text(encoding="utf-8")
    start, end = doc.index(MARK_START) + len(MARK_START), doc.index(MARK_END)
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:], encoding="utf-8")


def main() -> None:
    from ultrasam.data.synthetic import MOTIONS, TARGETS, make_cine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="checkpoint (default: the bundled default model)")
    p.add_argument("--random", metavar="VARIANT", help="random weights of a variant: "
                   "mechanics and speed only, Dice means nothing")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--loops", type=int, default=16,
                   help="synthetic loops: motions x targets, then the next seed")
    p.add_argument("--label", help="how the model is named in the record (default: the "
                                   "checkpoint path)")
    p.add_argument("--variants", default="logits+box",
                   help=f"comma-separated carry policies from {list(VARIANTS)}, or 'all'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--strip", type=Path, help="also write pydicom's cine overlay strip here")
    p.add_argument("--out", type=Path, default=RESULTS / "tracking.json")
    p.add_argument("--update-docs", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    model, label = load(args)
    load_before = os.getloadavg()
    # Motion varies fastest and the target alternates, so a few loops already cover both.
    combos = [(MOTIONS[i % len(MOTIONS)], TARGETS[(i + i // len(MOTIONS)) % len(TARGETS)],
               i // (len(MOTIONS) * len(TARGETS))) for i in range(args.loops)]
    per: dict[str, dict[str, list[Any]]] = {n: {"dice": [], "flag": [], "fps": [], "cpu": []}
                                            for n in names}
    upper_all, lower_all, loops = [], [], []
    for motion, target, seed in combos:
        cine = make_cine(seed, n_frames=args.frames, size=args.size, motion=motion,
                         structure=target)
        record: dict[str, Any] = {"motion": motion, "structure": target, "seed": seed}
        first = None
        for name in names:
            out = run_loop(model, cine, VARIANTS[name])
            first = out["first_mask"] if first is None else first
            per[name]["dice"].append(out["dice"])
            per[name]["flag"].append(out["flagged"])
            per[name]["fps"].append(args.frames / out["seconds"])
            per[name]["cpu"].append(args.frames / out["cpu_s"])
            record[name] = {"dice": [round(v, 4) for v in out["dice"]],
                            "flagged": [k for k, f in enumerate(out["flagged"]) if f],
                            "seconds": round(out["seconds"], 3),
                            "cpu_s": round(out["cpu_s"], 3),
                            "encode_s": round(out["encode_s"], 3),
                            "decode_s": round(out["decode_s"], 3)}
        assert first is not None
        upper, lower = bounds(model, cine, first)
        upper_all.append(upper)
        lower_all.append(lower)
        record["upper"] = [round(v, 4) for v in upper]
        record["lower"] = [round(v, 4) for v in lower]
        loops.append(record)
        print(f"{motion:9s} {target:17s} seed {seed}: " + ", ".join(
            f"{n} {np.mean(record[n]['dice']):.3f}" for n in names)
            + f" | upper {np.mean(upper):.3f} lower {np.mean(lower):.3f}", flush=True)
    tracked = {}
    for name in names:
        d = np.concatenate([np.array(v) for v in per[name]["dice"]])
        f = np.concatenate([np.array(v) for v in per[name]["flag"]])
        bad = d < 0.8
        tracked[name] = {**summarise(per[name]["dice"]),
                         "frames_per_second_median": round(statistics.median(per[name]["fps"]),
                                                           2),
                         "frames_per_cpu_second_median": round(
                             statistics.median(per[name]["cpu"]), 2),
                         "flag_precision": round(float(bad[f].mean()), 3) if f.any() else None,
                         "flag_recall": round(float(f[bad].mean()), 3) if bad.any() else None}
    res: dict[str, Any] = {
        "command": "python benchmarks/bench_tracking.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "torch": torch.__version__,
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "model": label, "size": args.size, "frames_per_loop": args.frames, "loops": len(loops),
        "tracked": tracked, "upper": summarise(upper_all), "lower": summarise(lower_all),
        "target_frames_per_second": 8.0,
        "pydicom_cine": pydicom_cine(model, args.strip),
        "load_avg_1_5_15_before": [round(v, 2) for v in load_before],
        "load_avg_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        "per_loop": loops,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    text = table(res)
    print(text)
    print("pydicom cine:", res["pydicom_cine"])
    if args.update_docs:
        update_docs(text)


if __name__ == "__main__":
    main()
