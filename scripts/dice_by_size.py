"""Where a checkpoint loses Dice: per-instance Dice of one protocol, binned by object size.

    python scripts/dice_by_size.py runs/eval_mmotu [--checkpoint NAME] [--protocol point]

Reads an ``ultrasam evaluate`` output folder (its ``ground_truth.coco.json`` and
``<checkpoint>/<protocol>/instances.csv``) and prints, per bin of the object's share of its
image's area, the number of instances, their mean Dice, the median ratio of predicted to true
area (> 1: over-segmented) and the bin's share of the total Dice loss (sum of 1 - Dice).
"""

from __future__ import annotations

import argparse
import csv
import json
from itertools import pairwise
from pathlib import Path
from statistics import median

BINS = (0.0, 0.02, 0.05, 0.10, 0.20, 1.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("eval_dir", type=Path)
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint sub-folder (default: the only one that is not a baseline)")
    ap.add_argument("--protocol", default="point")
    args = ap.parse_args()
    root: Path = args.eval_dir
    name = args.checkpoint
    if name is None:
        names = [p.name for p in root.iterdir()
                 if p.is_dir() and (p / args.protocol / "instances.csv").is_file()
                 and not p.name.startswith("baseline-")]
        if len(names) != 1:
            raise SystemExit(f"give --checkpoint: found {names or 'none'} in {root}")
        name = names[0]
    gt = json.loads((root / "ground_truth.coco.json").read_text())
    image_area = {im["id"]: im["width"] * im["height"] for im in gt["images"]}
    ann = {a["id"]: a for a in gt["annotations"]}
    with (root / name / args.protocol / "instances.csv").open() as f:
        rows = list(csv.DictReader(f))
    items = []
    for r in rows:
        a = ann[int(r["ann_id"])]
        items.append((a["area"] / image_area[a["image_id"]], float(r["dice"]),
                      float(r["pred_area"]) / max(a["area"], 1.0)))
    total_loss = sum(1 - d for _, d, _ in items) or 1.0
    print(f"{name} / {args.protocol}: {len(items)} instances, mean Dice "
          f"{sum(d for _, d, _ in items) / max(len(items), 1):.4f}")
    print("| object / image area | instances | mean Dice | median pred / true area "
          "| share of Dice loss |")
    print("|---|---|---|---|---|")
    for lo, hi in pairwise(BINS):
        sel = [(d, r) for s, d, r in items if lo <= s < hi]
        if not sel:
            continue
        dice = [d for d, _ in sel]
        print(f"| {lo:.0%}-{min(hi, 1.0):.0%} | {len(sel)} | {sum(dice) / len(sel):.3f} | "
              f"{median(r for _, r in sel):.2f} | {sum(1 - d for d in dice) / total_loss:.0%} |")


if __name__ == "__main__":
    main()
