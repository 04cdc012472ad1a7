"""The comparison report of an evaluation folder: tables, plots and example overlays.

Writes into ``DIR``: ``summary.csv`` (one row per checkpoint x protocol, with the gain over the
ellipse baseline on the same boxes), ``summary.md`` (the same table, per-dataset Dice, the
sweeps, the interactive NoC table when it was run, and links), ``plots/*.png`` and
``examples/index.html`` with one overlay PNG per example image (ground truth in green, each
method's mask in its own panel). matplotlib is imported only here, with the Agg backend.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.evaluate.coco_eval import GroundTruth, annotation_mask
from ultrasam.evaluate.files import read_image, write_csv

log = logging.getLogger(__name__)

ELLIPSE = "baseline-ellipse"
N_EXAMPLES = 6


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_rows(metrics: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per checkpoint x protocol; box protocols get ``*_vs_ellipse`` differences."""
    ellipse = next((m for m in metrics if m["checkpoint"] == ELLIPSE and m["protocol"] == "box"),
                   None)
    rows = []
    for m in metrics:
        row = {k: m.get(k) for k in ("checkpoint", "protocol", "n_instances",
                                     "n_instances_too_small", "segm_mAP", "segm_mAP_50",
                                     "dice_mean")}
        row["dice_ci_low"], row["dice_ci_high"] = m["dice_ci"]
        row["iou_mean"] = m["iou_mean"]
        row["hd95_median_px"] = m["hd95_median"]
        box = m["protocol"].startswith("box")
        for key in ("dice_mean", "segm_mAP"):
            a = m.get(key)
            b = ellipse.get(key) if ellipse else None
            row[f"{key}_vs_ellipse"] = (a - b) if (box and a is not None and b is not None) \
                else None
        rows.append(row)
    return rows


def _markdown_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return lines


def _plots(out: Path, metrics: Sequence[dict[str, Any]],
           sweeps: Sequence[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    labels = [f"{m['checkpoint']}\n{m['protocol']}" for m in metrics]
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(metrics) + 2), 4))
    for ax, key, title in ((axes[0], "dice_mean", "mean Dice (95% CI)"),
                           (axes[1], "segm_mAP", "COCO mask mAP")):
        vals = [m[key] if m[key] is not None else np.nan for m in metrics]
        x = np.arange(len(metrics))
        if key == "dice_mean":
            lo = [v - m["dice_ci"][0] if m["dice_ci"][0] is not None else 0
                  for v, m in zip(vals, metrics)]
            hi = [m["dice_ci"][1] - v if m["dice_ci"][1] is not None else 0
                  for v, m in zip(vals, metrics)]
            ax.bar(x, vals, yerr=[lo, hi], capsize=3, color="tab:blue")
        else:
            ax.bar(x, vals, color="tab:orange")
        ax.set_xticks(x, labels, fontsize=7, rotation=45, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(folder / "summary.png", dpi=100)
    plt.close(fig)
    written.append("plots/summary.png")
    for sweep, xlabel in (("box_jitter", "box jitter (fraction of box size)"),
                          ("clicks", "corrective clicks after the centroid"),
                          ("random_point", "random interior point draw")):
        rows = [r for r in sweeps if r["sweep"] == sweep]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for key in sorted({(r["checkpoint"], r["protocol"]) for r in rows}):
            pts = sorted((r["level"], r["dice_mean"]) for r in rows
                         if (r["checkpoint"], r["protocol"]) == key)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                    label=f"{key[0]} {key[1]}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean Dice")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / f"sweep_{sweep}.png", dpi=100)
        plt.close(fig)
        written.append(f"plots/sweep_{sweep}.png")
    return written


def _examples(out: Path, metrics: Sequence[dict[str, Any]], gt: GroundTruth,
              n_examples: int) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not metrics or not gt.images:
        return None
    folder = out / "examples"
    folder.mkdir(parents=True, exist_ok=True)
    # Evenly spaced images: deterministic and spread over datasets of a merged corpus.
    picks = np.unique(np.linspace(0, len(gt.images) - 1, min(n_examples, len(gt.images)))
                      .round().astype(int))
    panels = [(m["checkpoint"], m["protocol"]) for m in metrics]
    preds: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for key in panels:
        path = out / key[0] / key[1] / "predictions.coco.json"
        by_image: dict[int, list[dict[str, Any]]] = {}
        for r in json.loads(path.read_text(encoding="utf-8")):
            by_image.setdefault(int(r["image_id"]), []).append(r)
        preds[key] = by_image
    items = []
    for i in picks:
        info = gt.images[int(i)]
        image = read_image(info.path, info.height, info.width)
        gt_mask = np.zeros((info.height, info.width), bool)
        for inst in info.instances:
            gt_mask |= inst.mask(info.height, info.width)
        fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 2.8))
        axes = np.atleast_1d(axes)
        axes[0].imshow(image)
        axes[0].contour(gt_mask, levels=[0.5], colors="lime", linewidths=1)
        axes[0].set_title("ground truth", fontsize=8)
        for ax, key in zip(axes[1:], panels):
            pred = np.zeros_like(gt_mask)
            for r in preds[key].get(info.image_id, []):
                pred |= annotation_mask(r["segmentation"], info.height, info.width)
            ax.imshow(image)
            ax.contour(gt_mask, levels=[0.5], colors="lime", linewidths=0.8)
            if pred.any():
                ax.contour(pred, levels=[0.5], colors="red", linewidths=1)
            ax.set_title(f"{key[0]}\n{key[1]}", fontsize=7)
        for ax in axes:
            ax.axis("off")
        fig.tight_layout()
        name = f"image_{info.image_id}.png"
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        items.append(f'<figure><img src="{name}" alt="image {info.image_id}">'
                     f"<figcaption>{html.escape(info.dataset)} — image {info.image_id} "
                     f"({html.escape(info.path.name)})</figcaption></figure>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ultrasam evaluation "
            "examples</title><style>body{font-family:sans-serif}img{max-width:100%}</style>"
            "</head><body><h1>Example overlays</h1><p>Green: ground truth; red: prediction."
            "</p>\n" + "\n".join(items) + "\n</body></html>\n")
    (folder / "index.html").write_text(page, encoding="utf-8")
    return "examples/index.html"


def _interactive_section(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown of the interactive (NoC) table: rows from ``interactive.table_rows`` and
    ``interactive.not_applicable_row``."""
    models = [r for r in rows if not r["note"]]
    skipped = [r["checkpoint"] for r in rows if r["note"]]
    first = models[0] if models else rows[0]
    fixed = {"checkpoint", "dataset", "n_instances", "max_clicks", "mask_prompt", "note"}
    metric_cols = [c for c in first if c not in fixed]
    intro = (f"Up to {first['max_clicks']} simulated corrective clicks per instance, each at "
             "the interior-most point of the deeper error region (positive in a missed region, "
             "negative in a false one); the previous low-res logits "
             f"{'are' if first['mask_prompt'] else 'are not'} passed as the mask prompt. "
             f"NoC@t: mean clicks to reach IoU t ({first['max_clicks']} when never reached); "
             "failures: instances that never reach it; miou_at_k: mean IoU after k clicks.")
    md = ["", "## Interactive: corrective clicks (NoC)", "", intro, ""]
    if models:
        md += _markdown_table(models, ["checkpoint", "dataset", "n_instances", *metric_cols])
    if skipped:
        md += ["", (f"Not applicable to {', '.join(skipped)}: these baselines take a box, "
                    "not clicks, so they have no interactive numbers.")]
    return md


def write_report(out_dir: str | Path, metrics: Sequence[dict[str, Any]],
                 sweeps: Sequence[dict[str, Any]], gt: GroundTruth,
                 n_examples: int = N_EXAMPLES,
                 interactive: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Write summary.csv/md, plots and the examples page; returns the summary rows and files.

    ``interactive``: the per-dataset NoC rows (``protocol.evaluate`` writes them to
    ``interactive.{json,csv}``), shown as their own section of summary.md.
    """
    out = Path(out_dir)
    rows = summary_rows(metrics)
    write_csv(out / "summary.csv", rows)
    try:
        import matplotlib  # noqa: F401  (optional: the "plots" extra)
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'ultrasam[plots]'): "
                    "summary tables written, plots and the overlay page skipped")
        plots, examples = [], None
    else:
        plots = _plots(out, metrics, sweeps) if metrics else []
        examples = _examples(out, metrics, gt, n_examples)
    cols = ["checkpoint", "protocol", "n_instances", "segm_mAP", "segm_mAP_50", "dice_mean",
            "dice_ci_low", "dice_ci_high", "iou_mean", "hd95_median_px", "dice_mean_vs_ellipse",
            "segm_mAP_vs_ellipse"]
    md = [f"# Evaluation: {gt.source}" + (f" (split {gt.split})" if gt.split else ""), "",
          f"{len(gt.images)} images, {len(gt.coco['annotations'])} instances; "
          f"{gt.n_images_without_instances} images without instances skipped. "
          "mAP: class-agnostic COCO mask mAP (pycocotools); Dice/IoU: mean with 95% bootstrap "
          "CI; HD95 in pixels. `*_vs_ellipse`: difference to the inscribed-ellipse baseline "
          "on the same boxes (box protocols only).", ""]
    md += _markdown_table(rows, cols)
    datasets = sorted({d for m in metrics for d in m["by_dataset"]})
    if len(datasets) > 1:
        md += ["", "## Mean Dice per dataset", ""]
        drows = [{"method": f"{m['checkpoint']} {m['protocol']}",
                  **{d: m["by_dataset"].get(d, {}).get("dice", {}).get("mean") for d in datasets}}
                 for m in metrics]
        md += _markdown_table(drows, ["method", *datasets])
    if sweeps:
        md += ["", "## Robustness sweeps", ""]
        md += _markdown_table(sweeps, ["checkpoint", "sweep", "protocol", "level", "segm_mAP",
                                       "dice_mean", "iou_mean"])
    if interactive:
        md += _interactive_section(interactive)
    if plots or examples:
        md += ["", "## Figures", ""]
        md += [f"![{p}]({p})" for p in plots]
        if examples:
            md += ["", f"[Example overlays]({examples})"]
    (out / "summary.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return {"rows": rows, "plots": plots, "examples": examples}
