"""Record a default-model training run under benchmarks/results/default_cpu/.

    python scripts/default_model_record.py [--run runs/default_cpu] [--log runs/train_run1.log]

Copies the run's resolved config, its per-step metrics and its learning curve (Dice of the box
and centroid-point prompts on the fixed MMOTU-2D val subset at the 256-px training frame,
against images seen, with the inscribed ellipse of the same boxes), and draws the curve as a
PNG (matplotlib, optional). The training log is copied too when given.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/default_cpu")
    ap.add_argument("--log", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_cpu"))
    args = ap.parse_args()
    run, out = Path(args.run), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / "config.json", out / "config.json")
    shutil.copyfile(run / "curve.csv", out / "curve.csv")
    # Per-step metrics, rounded (the raw file has 17 significant digits per value).
    with (run / "metrics.jsonl").open() as src, (out / "metrics.jsonl").open("w") as dst:
        for line in src:
            row = json.loads(line)
            dst.write(json.dumps({k: round(v, 5) if isinstance(v, float) else v
                                  for k, v in row.items()}) + "\n")
    if args.log:
        shutil.copyfile(args.log, out / "train.log")
    rows = list(csv.DictReader((run / "curve.csv").open()))
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
    ax.set_title("Default model (FusionNet) trained on a 2-core CPU")
    fig.tight_layout()
    fig.savefig(out / "curve.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
