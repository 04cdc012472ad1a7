"""Record a default-model training run under benchmarks/results/default_cpu/.

    python scripts/default_model_record.py [--run runs/default_cpu] [--log runs/train_run1.log]
        [--previous benchmarks/results/default_cpu --out benchmarks/results/default_cpu/run2]
        [--previous R1 --previous R2 ...]   # a chain of warm restarts, oldest first

Copies the run's resolved config, its per-step metrics and its learning curve (Dice of the box
and centroid-point prompts on the fixed MMOTU-2D val subset at the 256-px training frame,
against images seen, with the inscribed ellipse of the same boxes), and draws the curve as a
PNG (matplotlib, optional). The training log is copied too when given. A run that warm-starts
from earlier ones (``--previous``, repeatable, oldest first: their record folders) is drawn
after them, each run's samples counted on from the previous run's last. Steps logged twice (a process stopped between two
checkpoints, then resumed from the earlier one) keep their last row: the one the weights carry.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_row_per_step(rows: Iterable[dict]) -> list[dict]:
    """Rows sorted by step, one per step: where a step was logged twice (a run resumed from a
    checkpoint before it), the later row, the one the weights carry."""
    by_step = {int(row["step"]): row for row in rows}
    return [by_step[k] for k in sorted(by_step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/default_cpu")
    ap.add_argument("--log", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_cpu"))
    ap.add_argument("--previous", action="append", default=[],
                    help="record folder of a run this one warm-started from (repeatable, "
                         "oldest first)")
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "config.json", out / "config.json")
    # Per-step metrics, rounded (the raw file has 17 significant digits per value).
    with (run / "metrics.jsonl").open() as src:
        metrics = last_row_per_step(json.loads(line) for line in src)
    with (out / "metrics.jsonl").open("w") as dst:
        for row in metrics:
            dst.write(json.dumps({k: round(v, 5) if isinstance(v, float) else v
                                  for k, v in row.items()}) + "\n")
    if args.log:
        shutil.copyfile(args.log, out / "train.log")
    with (run / "curve.csv").open() as src:
        rows = last_row_per_step(csv.DictReader(src))
    with (out / "curve.csv").open("w", newline="") as dst:
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    # Chain the runs: each one's samples counted on from the previous run's last.
    chained: list[dict] = []
    restarts: list[int] = []
    for folder in [*args.previous, None]:
        part = rows if folder is None else list(
            csv.DictReader((Path(folder) / "curve.csv").open()))
        offset = int(chained[-1]["images_seen"]) if chained else 0
        if chained:
            restarts.append(offset)
        for r in part:
            r["images_seen"] = str(int(r["images_seen"]) + offset)
        chained += part
    rows = chained
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: curve.png not drawn")
        return
    seen = [int(r["images_seen"]) / 1000 for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(seen, [float(r["box_dice"]) for r in rows], "o-", label="box prompt")
    ax.plot(seen, [float(r["point_dice"]) for r in rows], "s-", label="centroid point")
    ax.plot(seen, [float(r["ellipse_dice"]) for r in rows], "--", color="grey",
            label="inscribed ellipse of the box")
    ax.set_xlabel("training samples seen (thousands)")
    ax.set_ylabel("mean Dice, MMOTU-2D val subset (256-px frame)")
    ax.set_ylim(0.5, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    for at in restarts:
        ax.axvline(at / 1000, color="grey", lw=0.8, ls=":")
        ax.text(at / 1000, 0.52, " warm restart", color="grey", fontsize=8)
    ax.set_title("Default model (FusionNet) trained on a 2-core CPU")
    fig.tight_layout()
    fig.savefig(out / "curve.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
