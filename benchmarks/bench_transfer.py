"""The transfer table: the default model's encoder vs the same architecture from random init,
within a stated wall-clock budget.

Tasks: classification of BUSI and BUS-UCLM (normal / benign / malignant) and MMOTU-2D
(8 tumour types, official split: its val images are the test set); segmentation of BUSI
lesions, HC18 heads and PSFHS (symphysis + head). Per task and encoder: linear probes
(frozen encoder) on 100 %, 25 % and 10 % of the (capped) training groups — nested subsets —
then full fine-tunes. The two encoders see the same seeded split; ``default - random`` is a
paired bootstrap over the same test images (balanced accuracy, or mean Dice).

Speed (a 2-core CPU): the corpus split files are parsed once for all tasks; a
:class:`ultrasam.finetune.RunCache` keeps each image's resized input and each encoder's frozen
features, so the 25 % and 10 % probes and the second look at val / test cost no encoder pass.

Budget (``--budget-min``): runs go in order — every task's linear probes first (task by task,
100 % then 25 % then 10 %, default encoder then random init), then the full fine-tunes. The
linear probes share ``--linear-share`` of the budget, the full fine-tunes the rest (plus what
the probes left). Each run's allotment is its share of its part's remaining time, in
proportion to its estimated cost (per-image CPU costs measured on this machine, rescaled by
what the runs so far actually took); its training gets the allotment minus its estimated
feature / evaluation time (``max_seconds``, checked between epochs), and a run whose
allotment cannot cover that is recorded as "not run (budget)". Full fine-tunes train on at
most ``--full-train-images`` images for at most ``--epochs-full`` epochs (stated per row).
Every finished row is written at once (JSON + Markdown), so a killed run keeps its rows;
``--resume`` reuses runs whose report is already in ``--work`` with the same options.

Splits: the corpus split the default model was trained with (``--split-dir``: the
``train/val/test.coco.json`` of ``ultrasam data split ../shared/data/us-corpus --out
runs/split``). Which datasets trained the default model is read from its training config
(``--training-config``: data sources and exclusions), and marked on every row.

    python benchmarks/bench_transfer.py --budget-min 15 --threads 2
    python benchmarks/bench_transfer.py --quick          # mechanics only (tiny caps)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import cpu_name

sys.path.insert(0, str(ROOT / "src"))

from ultrasam.finetune import FinetuneConfig, RunCache, classify, segment
from ultrasam.finetune.api import plan_splits
from ultrasam.finetune.cls_metrics import balanced_accuracy, confusion_matrix
from ultrasam.finetune.data import ImageSource, open_source

TASKS = {  # name -> (kind, dataset); one dataset's tasks adjacent: they share its features
    "cls:BUSI": ("classify", "BUSI"),
    "seg:BUSI": ("segment", "BUSI"),
    "cls:BUS_UCLM": ("classify", "BUS_UCLM"),
    "cls:MMOTU_2d": ("classify", "MMOTU_2d"),
    "seg:HC": ("segment", "HC"),
    "seg:PSFHS": ("segment", "PSFHS"),
}
# 1-thread CPU seconds per image on the 2-core AMD EPYC (time.process_time of the default
# FusionNet at 256 px, measured at nice 19 beside a training run): the relative costs that
# split the budget. Absolute times are rescaled by what the runs actually take (Scheduler).
# Segmentation decoder: measured at widths 64 and 32, the conv part growing with width^2.
COST = {"read": 0.003, "features": 0.033, "cls_epoch": 0.001, "full_epoch": 0.114,
        "full_eval": 0.035}


def seg_costs(width: int) -> tuple[float, float]:
    """(training, evaluation) seconds per image and epoch of the segmentation decoder."""
    w = (width / 64) ** 2
    return 0.003 + 0.038 * w, 0.0025 + 0.010 * w
LINEAR_EPOCHS_EXPECTED = 25  # early stopping usually ends a linear probe around here
MIN_TRAIN_SECONDS = 3.0


# ------------------------------------------------------------------------------ statistics
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
    """rows: N x 3 (true, predicted, number of classes) class indices."""
    k = int(rows[0, 2])
    return balanced_accuracy(confusion_matrix(rows[:, 0], rows[:, 1], k))


def _cls_rows(result: dict[str, Any]) -> np.ndarray:
    code = {c: i for i, c in enumerate(result["classes"])}
    k = len(result["classes"])
    return np.array([[code[p["label"]], int(np.argmax(p["probs"])), k]
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


# ------------------------------------------------------------------------------ run plan
@dataclass
class Run:
    task: str
    kind: str
    dataset: str
    encoder: str  # "default" or the random-init name
    mode: str
    fraction: float
    part: str  # "linear" or "full"
    cfg: FinetuneConfig | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    need: float = 0.0  # estimated reference seconds, unconstrained
    prep: float = 0.0  # estimated reference seconds outside training (features, eval)

    @property
    def key(self) -> str:
        return f"{self.task}|{self.encoder}|{self.mode}|{self.fraction}"


def training_datasets(config: Path, split_dir: Path) -> tuple[set[str], str]:
    """Datasets whose images trained the default model, from its training config (data
    sources = the split's train file; exclusions ``DATASET:split``), and how that was read."""
    import yaml

    if not config.is_file():
        return set(), f"training config {config} not found: not marked"
    data = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {}
    sources = [str(s) for s in data.get("sources") or []]
    excluded = {str(e) for e in data.get("exclude") or []}
    names: set[str] = set()
    for src in sources:
        path = (ROOT / src) if not Path(src).is_absolute() else Path(src)
        if path.resolve().parent != split_dir.resolve():
            return set(), (f"{config.name} trains on {src}, not on {split_dir}: datasets "
                           "not marked")
        images = json.loads(path.read_text(encoding="utf-8"))["images"]
        names |= {str(im.get("dataset")) for im in images
                  if f"{im.get('dataset')}:{im.get('split')}" not in excluded
                  and str(im.get("dataset")) not in excluded}
    return names, (f"{config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}: "
                   f"sources {sources}, excluded {sorted(excluded)}")


def estimate(run: Run, fresh_features: int, fresh_images: int, epochs_full: int) -> None:
    """Fill ``run.need`` / ``run.prep`` (reference seconds, see COST)."""
    n_tr, n_va, n_te = (run.sizes[s] for s in ("train", "val", "test"))
    assert run.cfg is not None
    seg_train, seg_eval = seg_costs(run.cfg.decoder_width)
    prep = fresh_images * COST["read"]
    if run.mode == "linear":
        prep += fresh_features * COST["features"]
        if run.kind == "classify":
            train = LINEAR_EPOCHS_EXPECTED * n_tr * COST["cls_epoch"]
        else:
            train = LINEAR_EPOCHS_EXPECTED * (n_tr * seg_train + n_va * seg_eval)
            prep += n_te * seg_eval * 2  # test logits and HD95 at full size
    else:
        train = epochs_full * (n_tr * COST["full_epoch"] + n_va * COST["full_eval"])
        prep += n_te * COST["full_eval"]
    run.prep, run.need = prep, prep + train


class Scheduler:
    """Allotments from the wall budget (module docstring)."""

    def __init__(self, budget_s: float | None, linear_share: float) -> None:
        self.budget = budget_s
        self.linear_share = linear_share
        self.t0 = time.time()
        self.scale = 1.0  # wall seconds per reference second, learned from the runs
        self._obs: list[tuple[float, float]] = []

    def elapsed(self) -> float:
        return time.time() - self.t0

    def observe(self, predicted_ref: float, wall: float) -> None:
        if predicted_ref > 0.5:
            self._obs.append((predicted_ref, wall))
            self.scale = sum(w for _, w in self._obs) / sum(p for p, _ in self._obs)

    def allot(self, run: Run, pending: list[Run], partner_allot: float | None = None
              ) -> tuple[float | None, float | None]:
        """(allotted wall seconds, training max_seconds), or (None, None) without a budget;
        (0, 0) = skip. A run's share of its part's remaining time is in proportion to its
        estimated cost, but never below what it needs to run at all (its features and
        evaluation plus MIN_TRAIN_SECONDS) while the part still has that: when the budget is
        short, the earlier runs (the table's priorities) run and the later ones are skipped.
        The random-init partner of a finished run gets at least that run's allotment, so
        pairs are compared on equal terms."""
        if self.budget is None:
            return None, None
        remaining = self.budget - self.elapsed()
        part = [r for r in pending if r.part == run.part]
        part_left = remaining if run.part == "full" else \
            min(remaining, self.budget * self.linear_share - self.elapsed())
        floor = run.prep * self.scale + MIN_TRAIN_SECONDS
        if part_left < floor:
            return 0.0, 0.0
        share = part_left * run.need / (sum(r.need for r in part) or 1.0)
        allot = max(share, floor, partner_allot or 0.0)
        allot = min(allot, run.need * self.scale * 2.0, part_left)  # at most twice its need
        allot = max(allot, floor)
        return allot, allot - run.prep * self.scale


# ------------------------------------------------------------------------------ output
def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    b = meta["budget"]
    lines = ["# Transfer: default-model encoder vs random init", "",
             (f"{meta['date']}, {meta['cpu']} ({meta['cores']} cores, {meta['threads']} torch "
              f"thread(s); {meta['note']}). Default encoder: {meta['default_checkpoint']}; "
              f"baseline: {meta['baseline']} (same architecture, random init). Splits: "
              f"{meta['splits']}."), "",
             ((f"Budget: {b['wall_minutes']:g} min wall in all ({b['linear_share']:.0%} for the "
               "linear probes)" if b["wall_minutes"] is not None else
               "Budget: no wall limit (training cap per run: "
               f"{b['max_seconds_without_budget']} s)") + "; at most "
              f"{b['max_images_per_split']} images per split; linear probes at most "
              f"{b['epochs_linear']} epochs (early stopping, patience {b['patience_linear']});"
              f" full fine-tunes at most {b['epochs_full']} epochs on at most "
              f"{b['full_train_images']} training images (augmented); segmentation decoder "
              f"width {b['segmentation_decoder_width']}; each row's own "
              "allotment (`budget s`: wall, `max train s`: its training cap, checked "
              "between epochs) and stop reason are in the table. Main metric: balanced "
              "accuracy (classification) or mean Dice (segmentation) with its 95 % "
              "bootstrap CI; `default - random`: paired bootstrap over the same test images."),
             "",
             (f"In the default model's training: {meta['training_data']}. `yes` = the "
              "dataset's corpus-split *train* images trained the default model (as "
              "segmentation prompts; never its class labels), and the fine-tuning training "
              "images below are those same images: in-domain transfer, not "
              "out-of-distribution; the test images were never trained on."), "",
             ("| task | in default training | mode | labels | encoder | n train/test | main "
              "[95% CI] | default - random [95% CI] | epochs (stop) | budget s | max train s "
              "| train s | wall s |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lab = f"{r['label_fraction'] * 100:.0f} %"
        allot = "–" if r.get("budget_seconds") is None else f"{r['budget_seconds']:.0f}"
        cap = "–" if r.get("max_train_seconds") is None else f"{r['max_train_seconds']:.0f}"
        head = (f"| {r['task']} | {r['in_default_training']} | {r['mode']} | {lab} | "
                f"{r['encoder']} | ")
        if r["status"] != "done":
            lines.append(head + f"– | {r['status']} | | | {allot} | {cap} | | |")
            continue
        ci = r["main_ci"]
        d = r.get("diff_vs_random")
        lines.append(
            head + f"{r['n_train']}/{r['n_test']} | {_fmt(r['main'])} [{_fmt(ci[0])}, "
            f"{_fmt(ci[1])}] | "
            + (f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else "") + " | "
            f"{r['epochs_run']} ({r['stopped']}) | {allot} | {cap} | "
            f"{r['train_seconds']:.0f} | {r['wall_seconds']:.0f} |")
    state = "finished" if meta.get("finished") else "in progress or interrupted"
    lines += ["", (f"Command: `{meta['command']}` ({meta['total_seconds']:.0f} s wall, "
                   f"{meta['cpu_seconds']:.0f} s CPU so far, {state}). Feature cache: "
                   f"{meta.get('cache_stats')}.")]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n"),
                         (".md", markdown(meta, rows))):
        target = out.with_suffix(suffix)
        tmp = target.with_suffix(suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)


# ------------------------------------------------------------------------------ main
def _reusable(work: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    """A finished run's result in ``work`` made with the same options (max_seconds aside)."""
    f = work / "metrics.json"
    if not f.is_file():
        return None
    r = json.loads(f.read_text(encoding="utf-8"))
    want = json.loads(json.dumps(cfg.to_dict()))
    have = dict(r.get("config") or {})
    want.pop("max_seconds"), have.pop("max_seconds", None)
    return r if have == want else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="encoder weights (default: bundled)")
    ap.add_argument("--checkpoint-label", default=None,
                    help="how the table names that checkpoint (e.g. 'intermediate step N')")
    ap.add_argument("--baseline-variant", default="fusion")
    ap.add_argument("--split-dir", default=str(ROOT / "runs" / "split"),
                    help="the default model's corpus split (train/val/test.coco.json)")
    ap.add_argument("--training-config", default=str(ROOT / "configs" / "default_cpu.yaml"),
                    help="the default model's training config (marks its datasets)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--modes", default="linear,full")
    ap.add_argument("--fractions", default="1.0,0.25,0.1",
                    help="label fractions of the linear probes (full fine-tunes: 1.0)")
    ap.add_argument("--budget-min", type=float, default=None,
                    help="wall-clock budget of the whole table in minutes (none: no limit)")
    ap.add_argument("--linear-share", type=float, default=0.7,
                    help="part of the budget for the linear probes")
    ap.add_argument("--max-images", type=int, default=200, help="cap per split (seeded groups)")
    ap.add_argument("--epochs-linear", type=int, default=60)
    ap.add_argument("--patience-linear", type=int, default=10)
    ap.add_argument("--epochs-full", type=int, default=4)
    ap.add_argument("--seg-width", type=int, default=32,
                    help="segmentation decoder channels (32: ~3x cheaper than the library's 64)")
    ap.add_argument("--full-train-images", type=int, default=64,
                    help="full fine-tunes train on about this many images (whole groups)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="training cap per run when no --budget-min is given")
    ap.add_argument("--cache-gb", type=float, default=2.0,
                    help="memory for cached images and features (one task at a time)")
    ap.add_argument("--no-cache", action="store_true",
                    help="recompute images and features in every run (speed comparison)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true",
                    help="reuse finished runs in --work made with the same options")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the planned runs and their estimated costs, run nothing")
    ap.add_argument("--quick", action="store_true",
                    help="mechanics only: 24 images per split, 2 epochs, BUSI tasks")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "transfer"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "transfer"))
    args = ap.parse_args(argv)
    if args.quick:
        args.max_images, args.epochs_linear, args.epochs_full = 24, 2, 1
        args.tasks, args.fractions, args.full_train_images = "cls:BUSI,seg:BUSI", "1.0,0.25", 16
    unknown = [t for t in args.tasks.split(",") if t not in TASKS]
    if unknown:
        ap.error(f"unknown tasks {unknown}; choose from {list(TASKS)}")
    return args


def plan(args: argparse.Namespace, corpus: ImageSource, encoders: list[tuple[str, dict]]
         ) -> list[Run]:
    """Every run in order, with its config and split sizes (module docstring)."""
    fractions = [float(f) for f in args.fractions.split(",")]
    runs: list[Run] = []
    modes = args.modes.split(",")
    tasks = args.tasks.split(",")
    first = list(dict.fromkeys(TASKS[t][1] for t in tasks))
    tasks.sort(key=lambda t: first.index(TASKS[t][1]))  # a dataset's tasks share features
    for part in ("linear", "full"):
        if part not in modes:
            continue
        for task in tasks:
            kind, dataset = TASKS[task]
            source = corpus.subset([dataset])
            records = [r for r in source.records if kind == "segment" or r.label is not None]
            for frac in (fractions if part == "linear" else [1.0]):
                for enc_name, enc in encoders:
                    base = FinetuneConfig(
                        **enc, mode=part, datasets=(dataset,), max_images=args.max_images,
                        seed=args.seed, epochs=args.epochs_linear, lr=1e-2,
                        patience=args.patience_linear, decoder_width=args.seg_width)
                    if part == "full":
                        n_tr = len(plan_splits(records, base)["train"])
                        base = base.replace(
                            epochs=args.epochs_full, patience=args.epochs_full, lr=3e-3,
                            label_fraction=min(1.0, args.full_train_images / max(n_tr, 1)))
                    else:
                        base = base.replace(label_fraction=frac)
                    sizes = {s: len(v) for s, v in plan_splits(records, base).items()}
                    runs.append(Run(task, kind, dataset, enc_name, part,
                                    base.label_fraction, part, base, sizes))
    return runs


def dry_run(runs: list[Run], args: argparse.Namespace) -> int:
    """The plan with unconstrained cost estimates (1-thread reference seconds, COST)."""
    total = 0.0
    first: set[tuple[str, str]] = set()
    for run in runs:
        fresh = (run.dataset, run.encoder, run.part) not in first or args.no_cache
        first.add((run.dataset, run.encoder, run.part))
        n = sum(run.sizes.values())
        estimate(run, n if fresh and run.mode == "linear" else 0, n if fresh else 0,
                 args.epochs_full)
        total += run.need
        print(f"{run.task:14s} {run.mode:6s} {run.fraction:5.2f} {run.encoder:20s} "
              f"n={run.sizes}  ~{run.need:6.1f} s (features/eval {run.prep:.1f} s)")
    print(f"total ~{total:.0f} reference s (1 thread, idle machine, early stopping at "
          f"~{LINEAR_EPOCHS_EXPECTED} epochs assumed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    sched = Scheduler(None if args.budget_min is None else 60.0 * args.budget_min,
                      args.linear_share)
    split_dir = Path(args.split_dir)
    files = [split_dir / f"{s}.coco.json" for s in ("train", "val", "test")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"error: the default model's corpus split is missing ({missing}); run "
              f"`ultrasam data split ../shared/data/us-corpus --out {split_dir} --seed 0`",
              file=sys.stderr)
        return 1
    datasets = sorted({TASKS[t][1] for t in args.tasks.split(",")})
    corpus = open_source([str(f) for f in files], datasets=datasets)  # parsed once
    in_training, how = training_datasets(Path(args.training_config), split_dir)
    base_name = f"{args.baseline_variant}-random-init"
    encoders = [("default", {"checkpoint": args.checkpoint}),
                (base_name, {"variant": args.baseline_variant})]
    runs = plan(args, corpus, encoders)
    if args.dry_run:
        return dry_run(runs, args)
    cache = None if args.no_cache else RunCache(int(args.cache_gb * (1 << 30)))
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "note": os.environ.get("TRANSFER_NOTE", "nice/load as run by the caller"),
        "default_checkpoint": args.checkpoint_label or (args.checkpoint or
                                                        "bundled default model"),
        "baseline": base_name,
        "splits": "the default model's corpus split (train = its training images; test never "
                  "trained on; MMOTU-2D: official val = test)",
        "training_data": how,
        "budget": {"wall_minutes": args.budget_min, "linear_share": args.linear_share,
                   "max_images_per_split": args.max_images,
                   "epochs_linear": args.epochs_linear, "patience_linear": args.patience_linear,
                   "epochs_full": args.epochs_full, "full_train_images": args.full_train_images,
                   "segmentation_decoder_width": args.seg_width,
                   "max_seconds_without_budget": args.max_seconds},
        "cache": not args.no_cache,
        "command": "python benchmarks/bench_transfer.py " + " ".join(
            sys.argv[1:] if argv is None else argv)}
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    seen_features: set[tuple[str, str]] = set()  # (dataset, encoder) with cached features
    seen_images: set[str] = set()  # tasks whose images are cached
    current_task = None

    def flush(finished: bool = False) -> None:
        meta["total_seconds"] = round(sched.elapsed(), 1)
        meta["cpu_seconds"] = round(time.process_time(), 1)  # all threads, imports included
        meta["finished"] = finished
        meta["cache_stats"] = None if cache is None else dict(cache.stats)
        write_outputs(out, meta, rows)

    for i, run in enumerate(runs):
        if cache is not None and run.dataset != current_task:
            cache.clear()  # one task's images and features at a time (bounded memory)
            seen_features.clear()
            seen_images.clear()
            current_task = run.dataset
        fresh = (run.dataset, run.encoder) not in seen_features and cache is not None
        n_all = sum(run.sizes.values())
        estimate(run, n_all if (fresh or cache is None) else 0,
                 n_all if (run.task not in seen_images or cache is None) else 0,
                 args.epochs_full)
        pending = runs[i:]
        for r in pending[1:]:
            if not r.need:
                estimate(r, sum(r.sizes.values()) if r.fraction == 1.0 else 0, 0,
                         args.epochs_full)
        partner = next((x for x in rows if x["task"] == run.task and x["mode"] == run.mode
                        and x["label_fraction"] == run.fraction and x["status"] == "done"),
                       None)
        allot, max_train = sched.allot(run, pending,
                                       partner.get("budget_seconds") if partner else None)
        assert run.cfg is not None
        cfg = run.cfg.replace(max_seconds=max_train if max_train is not None
                              else args.max_seconds)
        row: dict[str, Any] = {
            "task": run.task, "kind": run.kind, "dataset": run.dataset,
            "encoder": run.encoder, "mode": run.mode, "label_fraction": run.fraction,
            "in_default_training": ("yes (train split)" if run.dataset in in_training
                                    else "no") if in_training else "not marked",
            "budget_seconds": None if allot is None else round(allot, 1),
            "max_train_seconds": None if max_train is None else round(max_train, 1)}
        if allot == 0.0:
            row["status"] = "not run (budget)"
            rows.append(row)
            flush()
            continue
        work = Path(args.work) / run.task.replace(":", "_") / \
            f"{run.encoder}_{run.mode}_{run.fraction:g}"
        t0, c0 = time.time(), time.process_time()
        r = _reusable(work, cfg) if args.resume else None
        reused = r is not None
        if r is None:
            fn = classify if run.kind == "classify" else segment
            r = fn(corpus.subset([run.dataset]), work, cfg, cache=cache)
        wall = time.time() - t0
        if not reused:
            # Calibrate on the part outside training (features, evaluation): its work is
            # fixed, unlike the training, which the allotment itself cuts.
            sched.observe(run.prep, wall - r["train_seconds"])
            seen_features.add((run.dataset, run.encoder))
            seen_images.add(run.task)
        results[run.key] = r
        row.update({"status": "done", "reused": reused, "wall_seconds": round(wall, 1),
                    "cpu_seconds": round(time.process_time() - c0, 1),
                    **_summary(run.kind, r)})
        rows.append(row)
        other = encoders[0][0] if run.encoder != encoders[0][0] else encoders[1][0]
        pair = results.get(run.key.replace(f"|{run.encoder}|", f"|{other}|"))
        if pair is not None:
            a, b = (r, pair) if run.encoder == "default" else (pair, r)
            ra = _cls_rows(a) if run.kind == "classify" else _seg_rows(a)
            rb = _cls_rows(b) if run.kind == "classify" else _seg_rows(b)
            stat = _bal_acc if run.kind == "classify" else (lambda x: float(x[:, 0].mean()))
            if len(ra) == len(rb) and len(ra):
                d = paired_diff(ra, rb, stat, seed=args.seed)
                target = next(x for x in rows if x["task"] == run.task and x["mode"] == run.mode
                              and x["label_fraction"] == run.fraction
                              and x["encoder"] == "default" and x["status"] == "done")
                target["diff_vs_random"] = list(d)
        print(json.dumps({k: row.get(k) for k in ("task", "encoder", "mode", "label_fraction",
                                                  "main", "wall_seconds", "stopped",
                                                  "max_train_seconds")}), flush=True)
        flush()
    flush(finished=True)
    print(f"wrote {out}.json and {out}.md ({sched.elapsed():.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
