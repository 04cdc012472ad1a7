"""Writing: one method's folder of an evaluation (predictions, metrics, instances, sweeps,
the NoC traces)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ultrasam.evaluate.coco_eval import GroundTruth
from ultrasam.evaluate.files import finite, write_csv, write_json
from ultrasam.evaluate.interactive import NocSettings
from ultrasam.evaluate.results import noc_metrics, protocol_metrics, sweep_rows
from ultrasam.evaluate.tasks import NOC, PROTOCOLS, TaskResult


def write_method(out_dir: Path, name: str, store: dict[str, TaskResult], gt: GroundTruth,
                 n_small: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``out_dir/<name>/<protocol>/{predictions.coco.json, metrics.json, instances.csv}`` and
    ``out_dir/<name>/sweeps/sweeps.{json,csv}``; returns (metrics per protocol, sweep rows)."""
    metrics = []
    for protocol in PROTOCOLS:
        if protocol not in store:
            continue
        task = store[protocol]
        folder = out_dir / name / protocol
        write_json(folder / "predictions.coco.json", task.results)
        m = protocol_metrics(name, protocol, task, gt, n_small, seed)
        write_json(folder / "metrics.json", m)
        write_csv(folder / "instances.csv", task.records)
        metrics.append(m)
    rows = sweep_rows(name, store, gt, seed)
    if rows:
        write_json(out_dir / name / "sweeps" / "sweeps.json", rows)
        write_csv(out_dir / name / "sweeps" / "sweeps.csv", rows)
    return metrics, rows


def write_noc(out_dir: Path, name: str, task: TaskResult, gt: GroundTruth, n_small: int,
              settings: NocSettings, seed: int) -> dict[str, Any]:
    """``out_dir/<name>/noc/{metrics.json, instances.csv, traces.jsonl}``; returns the
    metrics."""
    folder = out_dir / name / NOC
    m = noc_metrics(name, task, gt, n_small, settings, seed)
    write_json(folder / "metrics.json", m)
    # Scalars in the CSV; the full IoU sequences and the clicks, one instance a line.
    write_csv(folder / "instances.csv", [{k: v for k, v in r.items()
                                          if k not in ("ious", "clicks")}
                                         for r in task.records])
    with (folder / "traces.jsonl").open("w", encoding="utf-8") as f:
        for r in task.records:
            f.write(json.dumps(finite({k: r[k] for k in ("ann_id", "image_id", "ious",
                                                           "clicks")})) + "\n")
    return m

