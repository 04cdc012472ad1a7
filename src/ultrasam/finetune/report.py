"""Fine-tuning reports: ``metrics.json``, ``report.md`` and ``plots/*.png`` in the run folder.

Classification: the metric table with 95 % bootstrap CIs, the confusion matrix (counts and
row-normalised with CIs), the reliability diagram (calibration) and the learning curve.
Segmentation: Dice / IoU / HD95 per structure with CIs and the learning curve. matplotlib is
imported only here (the ``plots`` extra); without it the JSON and Markdown are still written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.protocol import write_json

log = logging.getLogger(__name__)


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ci(value: Any, ci: Sequence[Any] | None) -> str:
    if ci is None or ci[0] is None:
        return _f(value)
    return f"{_f(value)} [{_f(ci[0])}, {_f(ci[1])}]"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'ultrasam[plots]'): plots skipped")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(plt: Any, folder: Path, history: Sequence[dict[str, Any]], val_name: str) -> str:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_score"] for h in history], marker="s", color="tab:orange",
             label=val_name)
    ax2.set_ylabel(val_name)
    fig.legend(loc="upper center", fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "curve.png", dpi=100)
    plt.close(fig)
    return "plots/curve.png"


def _confusion(plt: Any, folder: Path, m: dict[str, Any], classes: Sequence[str]) -> str:
    cm = np.asarray(m["confusion"])
    norm = np.asarray(m["confusion_norm"])
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.8 * k))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.2f}", ha="center", va="center",
                    fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(folder / "confusion.png", dpi=100)
    plt.close(fig)
    return "plots/confusion.png"


def _calibration(plt: Any, folder: Path, cal: dict[str, Any]) -> str:
    bins = [b for b in cal["bins"] if b["n"]]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
            label=f"model (ECE {cal['ece']:.3f})")
    for b in bins:
        ax.annotate(str(b["n"]), (b["confidence"], b["accuracy"]), fontsize=6,
                    textcoords="offset points", xytext=(3, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "calibration.png", dpi=100)
    plt.close(fig)
    return "plots/calibration.png"


def _header(result: dict[str, Any]) -> list[str]:
    r = result
    return [f"# Fine-tuning ({r['task']}): {r['encoder']} — {r['mode']}", "",
            (f"- data: {r['data']} ({r['n_images']['train']} train / {r['n_images']['val']} "
             f"val / {r['n_images']['test']} test images; label fraction "
             f"{r['label_fraction']})"),
            f"- encoder: `{r['encoder']}`, mode `{r['mode']}`"
            + (f", head `{r['head']}`" if r.get("head") else "")
            + f"; {r['trainable_parameters']:,} trainable parameters",
            (f"- training: {len(r['history'])} epochs ({r['stopped']}), best epoch "
             f"{r['best_epoch']}, {r['train_seconds']:.0f} s"), ""]


def write_classification_report(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    m, classes = result["test"], result["classes"]
    plots: list[str] = []
    plt = _pyplot()
    if plt is not None:
        folder = out / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        plots = [_confusion(plt, folder, m, classes), _calibration(plt, folder, m["calibration"]),
                 _curve(plt, folder, result["history"], "val balanced accuracy")]
    result["plots"] = plots
    md = _header(result)
    md += ["## Test metrics (95 % bootstrap CI)", "", "| metric | value |", "|---|---|"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "auc_ovr"):
        md.append(f"| {key} | {_ci(m[key], m[key + '_ci'])} |")
    md.append(f"| ECE (calibration) | {_f(m['calibration']['ece'])} |")
    md += ["", "## Confusion matrix (rows: true, columns: predicted; counts)", "",
           "| true \\ pred | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for name, row in zip(classes, m["confusion"]):
        md.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    md += ["", "Per-class one-vs-rest AUC: "
           + ", ".join(f"{c} {_f(v)}" for c, v in zip(classes, m["auc_per_class"]))]
    md += ["", *[f"![{p}]({p})" for p in plots]]
    write_json(out / "metrics.json", result)
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return result


def write_segmentation_report(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    plots: list[str] = []
    plt = _pyplot()
    if plt is not None:
        folder = out / "plots"
        folder.mkdir(parents=True, exist_ok=True)
        plots = [_curve(plt, folder, result["history"], "val mean Dice")]
    result["plots"] = plots
    md = _header(result)
    md += ["## Test metrics per structure (mean Dice / IoU, median HD95; 95 % bootstrap CI)", "",
           "| structure | n | Dice | IoU | HD95 px | HD95 mm |", "|---|---|---|---|---|---|"]
    agg = result["test"]
    for name, s in [("all", agg["all"]), *agg["by_structure"].items()]:
        mm = s.get("hd95_mm")
        md.append(f"| {name} | {s['n_instances']} | "
                  f"{_ci(s['dice']['mean'], (s['dice']['ci_low'], s['dice']['ci_high']))} | "
                  f"{_ci(s['iou']['mean'], (s['iou']['ci_low'], s['iou']['ci_high']))} | "
                  f"{_ci(s['hd95_px']['median'], (s['hd95_px']['ci_low'], s['hd95_px']['ci_high']))} | "
                  + (_ci(mm['median'], (mm['ci_low'], mm['ci_high'])) if mm else "–") + " |")
    md += ["", *[f"![{p}]({p})" for p in plots]]
    write_json(out / "metrics.json", result)
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return result
