"""The transfer table: the default model's encoder vs the same architecture from random init.

For each task — classification of BUSI and BUS-UCLM (normal / benign / malignant) and MMOTU-2D
(8 tumour types, official split: its val images are the test set), segmentation of BUSI
lesions, HC18 heads and PSFHS (symphysis + head) — and each encoder, ``ultrasam.finetune``
trains a linear probe (frozen encoder) and a full fine-tune, and linear probes on 10 % and 25 %
of the training groups (label efficiency). Every run has the same small, stated budget
(``--max-images`` per split, ``--epochs-*``, ``--max-seconds`` of training) and the same
seeded split, so the two encoders see the same images; the difference default - random is
reported with a paired bootstrap CI over the test images (balanced accuracy, or mean Dice).

Splits: by default the corpus split the default model was trained with (``--split-dir``, the
``train/val/test.coco.json`` of ``ultrasam data split ../shared/data/us-corpus --out
runs/split``): the test images were never seen in its training. All ten corpus datasets'
*train* splits trained the default model (segmentation prompts, no class labels), so transfer
here is in-domain, not out-of-distribution; the table says so on every row.

    python benchmarks/bench_transfer.py --checkpoint PATH        # or none: the bundled model
    python benchmarks/bench_transfer.py --quick                  # mechanics only (tiny caps)

writes benchmarks/results/transfer.json and transfer.md (``--out``) and keeps each run's
report under ``--work`` (default runs/transfer).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import cpu_name

sys.path.insert(0, str(ROOT / "src"))

from ultrasam.finetune import FinetuneConfig, classify, segment
from ultrasam.finetune.cls_metrics import balanced_accuracy, confusion_matrix
from ultrasam.finetune.data import open_source

TASKS = {  # name -> (kind, dataset, structures)
    "cls:BUSI": ("classify", "BUSI", None),
    "cls:BUS_UCLM": ("classify", "BUS_UCLM", None),
    "cls:MMOTU_2d": ("classify", "MMOTU_2d", None),
    "seg:BUSI": ("segment", "BUSI", None),
    "seg:HC": ("segment", "HC", None),
    "seg:PSFHS": ("segment", "PSFHS", None),
}
# Every corpus dataset's train split trained the default model (runs/default_cpu config).
DEFAULT_TRAINING_DATASETS = ("BUSI", "BUS_UCLM", "DDTI", "HC", "MMOTU_2d", "NERVE", "PSFHS",
                             "STU-Hospital", "TG3K", "USGRA")


def paired_diff(a: np.ndarray, b: np.ndarray, stat: Any, n_boot: int = 1000,
                seed: int = 0) -> tuple[float, float, float]:
    """stat(a) - stat(b) over the same test items, with a 95 % paired bootstrap CI.

    ``a``/``b``: per-item rows (same order); ``stat``: rows -> number."""
    rng = np.random.default_rng(seed)
    diffs = []
    n = len(a)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        diffs.append(stat(a[idx]) - stat(b[idx]))
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return float(stat(a) - stat(b)), float(lo), float(hi)


def _bal_acc(rows: np.ndarray) -> float:
    """rows: N x 2 (true, predicted) class indices."""
    k = int(rows.max()) + 1
    return balanced_accuracy(confusion_matrix(rows[:, 0], rows[:, 1], k))


def _cls_rows(result: dict[str, Any]) -> np.ndarray:
    code = {c: i for i, c in enumerate(result["classes"])}
    return np.array([[code[p["label"]], int(np.argmax(p["probs"]))]
                     for p in result["test_predictions"]])


def _seg_rows(result: dict[str, Any]) -> np.ndarray:
    return np.array([[r["dice"]] for r in result["test_per_image"]])


def _summary(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    base = {"n_train": r["n_images"]["train"], "n_val": r["n_images"]["val"],
            "n_test": r["n_images"]["test"], "epochs_run": len(r["history"]),
            "best_epoch": r["best_epoch"], "stopped": r["stopped"],
            "train_seconds": round(r["train_seconds"], 1),
            "trainable_parameters": r["trainable_parameters"]}
    t = r["test"]
    if kind == "classify":
        base.update({k: t[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr")})
        base.update({f"{k}_ci": t[f"{k}_ci"] for k in ("balanced_accuracy", "macro_f1",
                                                        "auc_ovr")})
        base["ece"] = t["calibration"]["ece"]
        base["main"], base["main_ci"] = t["balanced_accuracy"], t["balanced_accuracy_ci"]
    else:
        s = t["all"]
        base.update({"dice": s["dice"]["mean"], "dice_ci": [s["dice"]["ci_low"],
                                                            s["dice"]["ci_high"]],
                     "iou": s["iou"]["mean"], "hd95_px": s["hd95_px"]["median"],
                     "hd95_mm": (s.get("hd95_mm") or {}).get("median"),
                     "per_structure": {k: v["dice"]["mean"]
                                       for k, v in t["by_structure"].items()}})
        base["main"], base["main_ci"] = base["dice"], base["dice_ci"]
    return base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="encoder weights (default: bundled)")
    ap.add_argument("--checkpoint-label", default=None,
                    help="how the table names that checkpoint (e.g. 'intermediate step N')")
    ap.add_argument("--baseline-variant", default="fusion")
    ap.add_argument("--split-dir", default=str(ROOT / "runs" / "split"),
                    help="folder with the default model's corpus split train/val/test.coco.json")
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "us-corpus"),
                    help="used only when --split-dir is absent (then the test images may have "
                         "been in the default model's training set: stated in the output)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--modes", default="linear,full")
    ap.add_argument("--fractions", default="0.1,0.25,1.0",
                    help="label fractions of the linear probes (full fine-tunes: 1.0 only)")
    ap.add_argument("--max-images", type=int, default=200, help="cap per split (seeded groups)")
    ap.add_argument("--epochs-linear", type=int, default=60)
    ap.add_argument("--epochs-full", type=int, default=12)
    ap.add_argument("--max-seconds", type=float, default=240.0,
                    help="training budget per run (checked between epochs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="mechanics only: 24 images per split, 2 epochs, BUSI tasks")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "transfer"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.max_images, args.epochs_linear, args.epochs_full = 24, 2, 1
        args.tasks, args.fractions = "cls:BUSI,seg:BUSI", "0.25,1.0"
    split_dir = Path(args.split_dir)
    files = [split_dir / f"{s}.coco.json" for s in ("train", "val", "test")]
    use_split = all(f.is_file() for f in files)
    encoders = [("default", {"checkpoint": args.checkpoint}),
                (f"{args.baseline_variant}-random-init", {"variant": args.baseline_variant})]
    default_label = args.checkpoint_label or (args.checkpoint or "bundled default model")
    rows: list[dict[str, Any]] = []
    results: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    t_start = time.time()
    for task in args.tasks.split(","):
        kind, dataset, structures = TASKS[task]
        paths: Any = [str(f) for f in files] if use_split else str(Path(args.corpus) / dataset)
        data = open_source(paths, datasets=(dataset,))  # parsed once, shared by the runs
        for mode in args.modes.split(","):
            fractions = [float(f) for f in args.fractions.split(",")] if mode == "linear" \
                else [1.0]
            for frac in fractions:
                for enc_name, enc in encoders:
                    cfg = FinetuneConfig(
                        **enc, mode=mode, datasets=(dataset,), label_fraction=frac,
                        structures=structures, max_images=args.max_images,
                        epochs=args.epochs_linear if mode == "linear" else args.epochs_full,
                        patience=15 if mode == "linear" else 4,
                        lr=1e-2 if mode == "linear" else 3e-3,
                        max_seconds=args.max_seconds, seed=args.seed)
                    out = Path(args.work) / task.replace(":", "_") / f"{enc_name}_{mode}_{frac}"
                    t0 = time.time()
                    fn = classify if kind == "classify" else segment
                    r = fn(data, out, cfg)
                    results[(task, enc_name, mode, frac)] = r
                    row = {"task": task, "kind": kind, "dataset": dataset, "encoder": enc_name,
                           "mode": mode, "label_fraction": frac,
                           "in_default_training": "yes (train split)"
                           if dataset in DEFAULT_TRAINING_DATASETS else "no",
                           "wall_seconds": round(time.time() - t0, 1), **_summary(kind, r)}
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in ("task", "encoder", "mode",
                                                          "label_fraction", "main",
                                                          "wall_seconds")}), flush=True)
                a = results.get((task, "default", mode, frac))
                b = results.get((task, encoders[1][0], mode, frac))
                if a and b:
                    rows_a = _cls_rows(a) if kind == "classify" else _seg_rows(a)
                    rows_b = _cls_rows(b) if kind == "classify" else _seg_rows(b)
                    stat = _bal_acc if kind == "classify" else (lambda x: float(x.mean()))
                    if len(rows_a) == len(rows_b):
                        d, lo, hi = paired_diff(rows_a, rows_b, stat, seed=args.seed)
                        rows[-2]["diff_vs_random"] = [d, lo, hi]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
            "note": "2-core CPU shared with a training run; nice 19",
            "default_checkpoint": default_label, "baseline": encoders[1][0],
            "splits": "default model's corpus split (test images unseen in its training)"
            if use_split else "own seeded group-aware split of each dataset (the default "
                              "model's training may have seen these test images)",
            "budget": {"max_images_per_split": args.max_images,
                       "epochs_linear": args.epochs_linear, "epochs_full": args.epochs_full,
                       "max_train_seconds_per_run": args.max_seconds},
            "total_seconds": round(time.time() - t_start, 1),
            "command": "python benchmarks/bench_transfer.py " + " ".join(argv or sys.argv[1:])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1)
                                        + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(meta, rows), encoding="utf-8")
    print(f"wrote {out}.json and {out}.md")
    return 0


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Transfer: default-model encoder vs random init", "",
             (f"{meta['date']}, {meta['cpu']} ({meta['cores']} cores, {meta['threads']} torch "
             f"thread; {meta['note']}). Default encoder: {meta['default_checkpoint']}; "
             f"baseline: {meta['baseline']}. Splits: {meta['splits']}."), "",
             (f"Budget per run: at most {meta['budget']['max_images_per_split']} images per "
             f"split, {meta['budget']['epochs_linear']} epochs (linear probe) / "
             f"{meta['budget']['epochs_full']} (full fine-tune), at most "
             f"{meta['budget']['max_train_seconds_per_run']:.0f} s of training. Main metric: "
             "balanced accuracy (classification) or mean Dice (segmentation), 95 % bootstrap "
             "CI; `default - random`: paired bootstrap over the same test images. All datasets "
             "here trained the default model (train splits; segmentation, no class labels): "
             "in-domain transfer, not out-of-distribution."), "",
             ("| task | in default training | mode | labels | encoder | n train/test | main "
             "[95% CI] | default - random [95% CI] | epochs (stop) | train s |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = r["main_ci"]
        d = r.get("diff_vs_random")
        lines.append(
            f"| {r['task']} | {r['in_default_training']} | {r['mode']} | "
            f"{int(r['label_fraction'] * 100)} % | {r['encoder']} | {r['n_train']}/"
            f"{r['n_test']} | {_fmt(r['main'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | "
            + (f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "") + " | "
            f"{r['epochs_run']} ({r['stopped']}) | {r['train_seconds']:.0f} |")
    lines += ["", f"Command: `{meta['command']}` ({meta['total_seconds']:.0f} s in all)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
