"""CPU learning record: train a small model on the shared corpus, evaluate every checkpoint.

Trains ``configs/tiny_cpu.yaml`` (a 256-px ViT, from scratch, MMOTU_2d val held out) with
``ultrasam.train.train``, then scores the initial weights and every saved checkpoint on
MMOTU_2d val with ``ultrasam.evaluate.evaluate`` (the paper's four protocols, the ellipse
baseline alongside), and writes the curve:

    benchmarks/results/train_cpu_record.json   command, config, training and evaluation curves
    benchmarks/results/train_cpu_record.csv    one row per evaluated step
    benchmarks/results/train_cpu_record.png    training loss and val Dice against the step

Run from the repository root (one intra-op thread: on a small shared CPU, more threads are
slower):

    OMP_NUM_THREADS=1 python benchmarks/train_cpu_record.py

Extra arguments are training overrides (``run.steps=200``...). The run folder (checkpoints,
TensorBoard, exports) goes to ``--work`` and is not part of the record.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("box", "box_refine", "point", "point_refine")


def export_checkpoints(run_dir: Path, cfg, out: Path) -> list[tuple[int, Path]]:
    """Native folders for the initial weights (step 0) and every training checkpoint."""
    from ultrasam.config import ModelConfig, get_config
    from ultrasam.modeling import build_model
    from ultrasam.train.loop import checkpoints_in, load_checkpoint
    from ultrasam.weights.checkpoints import save_native

    exported = []
    # Step 0: the loop seeds torch with run.seed right before building the model.
    torch.manual_seed(cfg.run.seed)
    model = build_model(get_config(cfg.model.variant, **cfg.model.overrides))
    exported.append((0, save_native(model, out / "step_0000000", source="scratch")))
    for path in checkpoints_in(run_dir / "checkpoints"):
        state = load_checkpoint(path)
        model = build_model(ModelConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["model"])
        exported.append((int(state["step"]), save_native(model, out / path.stem,
                                                         source="scratch")))
    return exported


def portable(text: str) -> str:
    """Paths in the record relative to the repository root (no machine-specific prefixes)."""
    return text.replace(str(ROOT) + "/", "").replace(str(ROOT.parent) + "/", "../")


def plot(rows: list[dict], train_curve: list[dict], ellipse: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([r["step"] for r in train_curve], [r["loss"] for r in train_curve])
    a.set_xlabel("optimiser step")
    a.set_ylabel("training loss (20 focal + dice + IoU MSE, both passes)")
    a.set_title("training loss (window means)")
    for protocol in PROTOCOLS:
        b.plot([r["step"] for r in rows], [r[f"dice_{protocol}"] for r in rows], marker="o",
               label=protocol)
    if ellipse is not None:
        b.axhline(ellipse, color="grey", linestyle="--", label="ellipse baseline (box)")
    b.set_xlabel("optimiser step")
    b.set_ylabel("mean Dice")
    b.set_title("MMOTU_2d val")
    b.set_ylim(0, 1)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny_cpu.yaml"))
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "data" / "us-corpus"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "train_cpu_record"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--max-images", type=int, default=150,
                        help="seeded subset of MMOTU_2d val images to evaluate (0: all 469)")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the checkpoints of a finished run in --work again")
    parser.add_argument("overrides", nargs="*", help="training overrides key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from ultrasam.evaluate import evaluate
    from ultrasam.train import load_config, train

    corpus = Path(args.corpus)
    if not (corpus / "MMOTU_2d" / "annotations.coco.json").is_file():
        raise SystemExit(f"shared corpus not found at {corpus}")
    work = Path(args.work)
    overrides = [f"data.paths=[{corpus}]", f"run.out_dir={work}", "run.resume=never",
                 "run.progress=false", *args.overrides]
    cfg = load_config(args.config, overrides)
    # 1. Train (or, with --eval-only, read back a finished run).
    if args.eval_only:
        summary = json.loads((work / "summary.json").read_text())
    else:
        if (work / "checkpoints").exists() and any((work / "checkpoints").iterdir()):
            raise SystemExit(f"{work}/checkpoints is not empty: remove it, pass --work or "
                             "--eval-only")
        tic = time.perf_counter()
        summary = train(cfg)
        summary["train_seconds"] = time.perf_counter() - tic
        (work / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    train_seconds = summary["train_seconds"]
    train_curve = [json.loads(line) for line in Path(summary["metrics"]).read_text().splitlines()]

    # 2. Evaluate the initial weights and every checkpoint on MMOTU_2d val.
    exported = export_checkpoints(work, cfg, work / "exports")
    tic = time.perf_counter()
    result = evaluate([str(p) for _, p in exported], corpus / "MMOTU_2d", work / "evaluate",
                      split="val", protocols=PROTOCOLS, baselines=("ellipse",), sweeps=False,
                      max_images=args.max_images or None, seed=0, report=True)
    eval_seconds = time.perf_counter() - tic
    by_name = {}
    for m in result["metrics"]:
        by_name.setdefault(m["checkpoint"], {})[m["protocol"]] = m
    ellipse = by_name.get("baseline-ellipse", {}).get("box", {}).get("dice_mean")
    rows = []
    for step, path in exported:
        metrics = by_name[path.name]
        window = [r["loss"] for r in train_curve if r["step"] <= step][-1:] or [None]
        row = {"step": step, "train_loss": window[0]}
        for protocol in PROTOCOLS:
            row[f"dice_{protocol}"] = metrics[protocol]["dice_mean"]
            row[f"mAP_{protocol}"] = metrics[protocol]["segm_mAP"]
        rows.append(row)

    # 3. Record.
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    # The command that produces this record (an --eval-only re-run names the training run).
    command = "OMP_NUM_THREADS=1 python benchmarks/train_cpu_record.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
        if a != "--eval-only")
    record = {
        "command": command.strip(),
        "equivalent_cli": f"ultrasam train {args.config} " + " ".join(overrides),
        "config": cfg.to_dict(),
        "machine": f"CPU, torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)",
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "eval": {"data": "MMOTU_2d split=val", "max_images": args.max_images or "all",
                 "n_instances": next(iter(by_name[exported[0][1].name].values()))["n_instances"],
                 "protocols": list(PROTOCOLS), "ellipse_baseline_box_dice": ellipse},
        "counts": summary["counts"],
        "train_curve": train_curve,
        "eval_curve": rows,
    }
    stem = results / "train_cpu_record"
    stem.with_suffix(".json").write_text(portable(json.dumps(record, indent=1, sort_keys=True))
                                         + "\n")
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, train_curve, ellipse, stem.with_suffix(".png"))
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
