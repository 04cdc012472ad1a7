"""Collecting: the metric tables of one method's task results (``metrics.json`` content,
sweep rows, the NoC summary)."""

from __future__ import annotations

from typing import Any

from ultrasam.evaluate.coco_eval import GroundTruth, coco_map
from ultrasam.evaluate.interactive import NocSettings, pct_label, summarise_by_dataset
from ultrasam.evaluate.metrics import aggregate, summarise
from ultrasam.evaluate.tasks import NOC, TaskResult


def _per_dataset_map(gt: GroundTruth, results: list[dict[str, Any]]) -> dict[str, Any]:
    ids: dict[str, list[int]] = {}
    for im in gt.images:
        ids.setdefault(im.dataset, []).append(im.image_id)
    return {d: coco_map(gt.coco, results, image_ids=v) for d, v in sorted(ids.items())}


def protocol_metrics(name: str, protocol: str, task: TaskResult, gt: GroundTruth,
                     n_small: int, seed: int = 0) -> dict[str, Any]:
    """The ``metrics.json`` content of one checkpoint x protocol."""
    agg = aggregate(task.records, seed=seed)
    maps = coco_map(gt.coco, task.results)
    per_dataset_map = _per_dataset_map(gt, task.results)
    for d, v in agg["by_dataset"].items():
        v.update(per_dataset_map.get(d, {}))
    return {
        "checkpoint": name, "protocol": protocol, "data": gt.source, "split": gt.split,
        "n_images": len(gt.images), "n_instances": len(task.records),
        "n_instances_gt": len(gt.coco["annotations"]), "n_instances_too_small": n_small,
        "n_images_without_instances": gt.n_images_without_instances,
        "n_empty_predictions": sum(1 for r in task.records if r["pred_area"] == 0),
        **maps,
        "dice_mean": agg["all"]["dice"]["mean"], "dice_ci": [agg["all"]["dice"]["ci_low"],
                                                           agg["all"]["dice"]["ci_high"]],
        "iou_mean": agg["all"]["iou"]["mean"], "iou_ci": [agg["all"]["iou"]["ci_low"],
                                                        agg["all"]["iou"]["ci_high"]],
        "hd95_median": agg["all"]["hd95_px"]["median"], "hd95_unit": "px",
        "hd95_ci": [agg["all"]["hd95_px"]["ci_low"], agg["all"]["hd95_px"]["ci_high"]],
        "by_dataset": agg["by_dataset"], "by_structure": agg["by_structure"],
        "definitions": {
            "score": "predicted IoU of the kept mask (baselines: 1.0)",
            "mAP": "pycocotools COCOeval segm, class-agnostic, one prediction per GT instance",
            "hd95": "95th percentile of pooled symmetric boundary distances (8-neighbour "
                    "boundary), pixels; mm in by_dataset where the spacing is known",
            "ci": "95% percentile bootstrap, 1000 resamples (mean: Dice/IoU, median: HD95)",
        },
    }


def sweep_rows(name: str, store: dict[str, TaskResult], gt: GroundTruth,
               seed: int) -> list[dict[str, Any]]:
    """One row per sweep setting (mAP, Dice with CI, IoU), in sweep, protocol, level order."""
    rows = []
    order = {"box_jitter": 0, "random_point": 1, "clicks": 2}
    keys = sorted((k for k in store if "|" in k),
                  key=lambda k: (order[k.split("|")[0]], k.split("|")[1], float(k.split("|")[2])))
    for key in keys:
        sweep, protocol, level = key.split("|")
        task = store[key]
        d = summarise((r["dice"] for r in task.records), "mean", seed)
        rows.append({"checkpoint": name, "sweep": sweep, "protocol": protocol,
                     "level": float(level), "n_instances": len(task.records),
                     **coco_map(gt.coco, task.results),
                     "dice_mean": d["mean"], "dice_ci_low": d["ci_low"],
                     "dice_ci_high": d["ci_high"],
                     "iou_mean": summarise((r["iou"] for r in task.records), "mean", seed)["mean"]})
    return rows


def noc_metrics(name: str, task: TaskResult, gt: GroundTruth, n_small: int,
                settings: NocSettings, seed: int = 0) -> dict[str, Any]:
    """The ``noc/metrics.json`` content of one checkpoint (timing varies from run to run)."""
    clicks = sum(r["n_clicks"] for r in task.records)
    return {
        "checkpoint": name, "protocol": NOC, "data": gt.source, "split": gt.split,
        "n_images": len(gt.images), "n_instances": len(task.records),
        "n_instances_too_small": n_small, "settings": settings.as_dict(),
        **summarise_by_dataset(task.records, settings, seed),
        "timing": {"seconds": task.seconds, "cpu_seconds": task.cpu_seconds, "clicks": clicks,
                   "clicks_per_s": clicks / task.seconds if task.seconds > 0 else None},
        "definitions": {
            "click": "prompts.corrective_click: interior-most pixel of the deeper error region "
                     "(positive in a missed region, negative in a false one); click 1 on an "
                     "empty prediction",
            "noc": "clicks until IoU >= threshold, max_clicks when never reached (a failure)",
            "miou_at_k": "mean IoU after k clicks",
            "outputs": "click 1: multimask, highest predicted IoU kept; later: single mask",
            "ci": "95% percentile bootstrap of the mean NoC, 1000 resamples",
        },
    }


def noc_text(m: dict[str, Any]) -> str:
    """One line of a checkpoint's overall NoC numbers, e.g. ``NoC@85 2.10 (3 fail), ...``."""
    a = m["all"]
    parts = []
    for t in m["settings"]["thresholds"]:
        p = pct_label(t)
        v = a[f"noc_{p}"]
        parts.append(f"NoC@{p} {v:.2f} ({a[f'failures_{p}']} failed)" if v is not None
                     else f"NoC@{p} -")
    parts += [f"mIoU@{k} {a[f'miou_at_{k}']:.3f}" for k in m["settings"]["miou_at"]
              if a.get(f"miou_at_{k}") is not None]
    return ", ".join(parts)


