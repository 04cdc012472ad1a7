"""The README / benchmarks Markdown table of GPU results, generated from the recorded JSON.

Reads every ``gpu_*.json`` written by ``bench_gpu.py`` in ``benchmarks/results/`` (smoke runs,
marked ``"tiny": true``, are ignored), one row per file, oldest first:

    python benchmarks/gpu_table.py [--results DIR] [--out FILE]

Prints "no GPU results recorded yet" when there are none. Nothing here is measured: every
number comes from a results file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
EMPTY = "no GPU results recorded yet"

# (header, key, format); "{variant}" columns name the ultrasam variant that gave the number.
COLUMNS: list[tuple[str, str, str]] = [
    ("date", "date", "{}"),
    ("GPU", "gpu", "{}"),
    ("torch", "torch", "{}"),
    ("bf16 peak TFLOP/s", "peak_tflops", "{:.0f}"),
    ("encoder img/s: Meta", "reference_infer_img_s", "{:.1f}"),
    ("ultrasam", "ultrasam_infer_img_s", "{:.1f}"),
    ("x", "infer_speedup", "{:.1f}"),
    ("MFU", "infer_mfu", "{:.0%}"),
    ("train img/s: Meta", "reference_train_img_s", "{:.1f}"),
    ("ultrasam", "ultrasam_train_img_s", "{:.1f}"),
    ("x", "train_speedup", "{:.1f}"),
    ("MFU", "train_mfu", "{:.0%}"),
    ("recipe img/s", "ultrasam_recipe_train_img_s", "{:.1f}"),
    ("rel. logit error", "rel_logit_error_vs_eager", "{:.4f}"),
    ("mask IoU", "mean_mask_iou_vs_eager", "{:.4f}"),
    ("attention (infer / train)", "", ""),
]


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every non-smoke results file in ``folder``, sorted by (date, file name)."""
    rows = []
    for path in sorted(folder.glob("gpu_*.json")):
        try:
            res = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(res, dict):
            raise ValueError(f"{path}: expected a JSON object")
        if res.get("tiny"):
            continue
        res["_file"] = path.name
        rows.append(res)
    return sorted(rows, key=lambda r: (str(r.get("date")), r["_file"]))


def _cell(res: dict[str, Any], key: str, fmt: str) -> str:
    if not key:
        return (f"{res.get('ultrasam_infer_variant') or '-'} / "
                f"{res.get('ultrasam_train_variant') or '-'}")
    value = res.get(key)
    if value is None:
        return "-"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table (one row per results file) plus a note on what the columns mean."""
    if not rows:
        return EMPTY
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for res in rows:
        lines.append("| " + " | ".join(_cell(res, k, f) for _, k, f in COLUMNS) + " |")
    lines += [
        "",
        "Encoder: ViT-B, 1024 px, batch 8, bf16. Training: batch 4, one box per image, focal +"
        " dice, AdamW (Meta's reference drives its decoder image by image). Recipe: up to 8"
        " instances per image, box and point prompts, refinement pass. MFU: FLOPs counted by"
        " torch's FlopCounterMode over the card's measured bf16 matmul peak. Logit error and"
        " mask IoU: ultrasam's fast path vs its eager fp32 path. Produced by"
        " `benchmarks/bench_gpu.py`; errors and skipped sections are in each results file.",
    ]
    errors = [f"- {r['_file']}: {', '.join(sorted(r['errors']))}" for r in rows
              if r.get("errors")]
    if errors:
        lines += ["", "Sections that failed (see the file):", *errors]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(RESULTS), help="folder of gpu_*.json files")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    text = table(load_results(Path(args.results)))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
