"""The paper's evaluation protocol, robustness sweeps and baselines, written to a folder.

Protocols (the UltraSam paper, arXiv:2411.16222), one prediction per ground-truth instance:

- ``box``: the exact GT box, single-mask output (SAM's rule for boxes);
- ``point``: the GT centroid as one positive point, multimask output, the mask with the highest
  predicted IoU kept (SAM's rule for an ambiguous single point);
- ``box_refine`` / ``point_refine``: the same prompt through UltraSam's two-pass schedule
  (``Predictor.predict_torch(..., refine=True)``).

Score = the model's predicted IoU of the kept mask (baselines: 1.0). Baselines (``ellipse``,
``grabcut``) apply to the box protocol only and see the same boxes as the models.

Sweeps (``DIR/<checkpoint>/sweeps/sweeps.{json,csv}``): box jitter at ``JITTER_LEVELS`` (with
and without refinement; baselines without), ``N_RANDOM_POINTS`` random interior points drawn per
instance (with and without refinement), and 0-5 corrective clicks after the centroid click
(each click: ``prompts.corrective_click`` on the current mask, all clicks so far plus the
previous low-resolution logits as the mask prompt, single-mask output; an instance already
segmented perfectly gets no further click). Every prompt is drawn from a generator seeded by
(seed, image id, stream), so all methods see the same prompts. Sweeps report mAP, Dice and
IoU (no HD95, to keep them fast).

Interactive protocol ``noc`` (models only; ``ultrasam.evaluate.interactive``): up to
``NocSettings.max_clicks`` (20) corrective clicks per instance from an empty prediction, the
previous low-res logits as the mask prompt (``NocSettings.mask_prompt``), reporting NoC@85,
NoC@90, their failures and mean IoU after 1, 3 and 5 clicks in ``DIR/<checkpoint>/noc/`` and,
per dataset, in ``DIR/interactive.{json,csv}`` (baselines: a row saying they take no clicks).
It is opt-in (not in ``PROTOCOLS``) because it costs up to 20 decodes per instance.

Images without instances are skipped and counted; instances under ``MIN_PROMPT_AREA`` pixels
are not prompted, stay in the COCO ground truth (so they count as misses in mAP) and are
counted in ``metrics.json`` (``n_instances_too_small``). Metrics are computed at the stored
resolution of ``--data``.

Checkpoints: ``None`` in the list is the bundled default model (``ultrasam.load_model()``),
which raises a clear ``RuntimeError`` when no default model is installed; an empty list
evaluates the baselines only.

Code: what is evaluated in :mod:`~ultrasam.evaluate.runner`, running the protocols in
:mod:`~ultrasam.evaluate.run`, collecting metric tables in :mod:`~ultrasam.evaluate.results`,
writing a method's folder in :mod:`~ultrasam.evaluate.outputs`; :func:`evaluate` here plans the
methods and runs them in order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ultrasam.evaluate.baselines import BASELINES
from ultrasam.evaluate.coco_eval import load_ground_truth
from ultrasam.evaluate.files import write_csv, write_json
from ultrasam.evaluate.interactive import NocSettings, not_applicable_row, table_rows
from ultrasam.evaluate.outputs import write_method, write_noc
from ultrasam.evaluate.results import noc_text
from ultrasam.evaluate.run import run_method
from ultrasam.evaluate.runner import Method, ModelRunner
from ultrasam.evaluate.tasks import ALL_PROTOCOLS, NOC, PROTOCOLS

log = logging.getLogger(__name__)

# Re-exported: the protocol's names and the pieces callers use through this module.
__all__ = ["ALL_PROTOCOLS", "DEFAULT_NAME", "PROTOCOLS", "ModelRunner", "checkpoint_name",
           "evaluate", "noc_text", "write_json"]

DEFAULT_NAME = "default"


def checkpoint_name(path: str | Path | None) -> str:
    """``default`` for the bundled model, else the checkpoint's folder name or file stem."""
    if path is None:
        return DEFAULT_NAME
    p = Path(path)
    return p.name if p.is_dir() else p.stem


def _methods_plan(checkpoints: Sequence[str | Path | None] | None,
                  baselines: Sequence[str]) -> list[tuple[str, str | Path | None, str | None]]:
    ckpts: list[str | Path | None] = [None] if checkpoints is None else list(checkpoints)
    for b in baselines:
        if b not in BASELINES:
            raise ValueError(f"unknown baseline {b!r}; expected one of {sorted(BASELINES)}")
    plan: list[tuple[str, str | Path | None, str | None]] = []
    for c in ckpts:
        if c is not None and not Path(c).exists():
            raise FileNotFoundError(f"checkpoint not found: {c}")
        plan.append((checkpoint_name(c), c, None))
    plan += [(f"baseline-{b}", None, b) for b in baselines]
    names = [p[0] for p in plan]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"several checkpoints share the output name {dup}; rename them")
    if not plan:
        raise ValueError("nothing to evaluate: no checkpoint and no baseline")
    return plan


def evaluate(checkpoints: Sequence[str | Path | None] | None, data: str | Path,
             out_dir: str | Path, *, split: str | None = None,
             protocols: Sequence[str] = PROTOCOLS,
             baselines: Sequence[str] = ("ellipse", "grabcut"), sweeps: bool = True,
             max_images: int | None = None, device: str = "cpu", seed: int = 0,
             report: bool = True, noc: NocSettings | None = None) -> dict[str, Any]:
    """Evaluate checkpoints (``None`` = the bundled default) and baselines on ``data``.

    Writes ``out_dir/<name>/<protocol>/{predictions.coco.json, metrics.json, instances.csv}``,
    ``out_dir/<name>/sweeps/sweeps.{json,csv}``, ``out_dir/ground_truth.coco.json`` (the
    class-agnostic ground truth the predictions are scored against) and, with ``report``,
    ``out_dir/summary.{md,csv}``, plots and ``out_dir/examples/index.html``. With ``"noc"`` in
    ``protocols`` (settings ``noc``): ``out_dir/<name>/noc/{metrics.json, instances.csv,
    traces.jsonl}`` and ``out_dir/interactive.{json,csv}`` (one row per checkpoint x dataset).
    Returns ``{"metrics": [...], "sweeps": [...], "interactive": [...], "out_dir": str}``.
    """
    # 1. Check the request and plan the methods (checkpoints, then baselines).
    bad = [p for p in protocols if p not in ALL_PROTOCOLS]
    if bad or not protocols:
        raise ValueError(f"unknown protocols {bad or list(protocols)}; expected a subset of "
                         f"{list(ALL_PROTOCOLS)}")
    noc_settings = noc or NocSettings()
    plan = _methods_plan(checkpoints, baselines)
    # 2. The class-agnostic ground truth every method is scored against.
    gt = load_ground_truth(data, split=split, max_images=max_images, seed=seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ground_truth.coco.json", gt.coco)
    log.info("evaluating %d images, %d instances from %s (split %s)", len(gt.images),
             len(gt.coco["annotations"]), gt.source, split)
    all_metrics: list[dict[str, Any]] = []
    all_sweeps: list[dict[str, Any]] = []
    interactive: list[dict[str, Any]] = []
    noc_rows: list[dict[str, Any]] = []
    # 3. Each method: run the protocols on every image, write its folder, collect its rows.
    for name, path, baseline in plan:
        start = time.perf_counter()
        if baseline is None:
            from ultrasam.weights.checkpoints import load_model

            method = Method(name, runner=ModelRunner(load_model(path, device=device)))
        else:
            method = Method(name, baseline=baseline)
        store, n_small = run_method(method, gt, protocols, sweeps, seed, noc=noc_settings)
        metrics, sweep_rows = write_method(out, name, store, gt, n_small, seed)
        all_metrics += metrics
        all_sweeps += sweep_rows
        if NOC in protocols and method.runner is None:
            noc_rows.append(not_applicable_row(name, noc_settings))
        elif NOC in store:
            m = write_noc(out, name, store[NOC], gt, n_small, noc_settings, seed)
            interactive.append(m)
            noc_rows += table_rows(name, m, noc_settings)
            log.info("%s noc: %s; %d instances, %d clicks in %.1f s (%.1f clicks/s)", name,
                     noc_text(m), m["n_instances"], m["timing"]["clicks"],
                     m["timing"]["seconds"], m["timing"]["clicks_per_s"] or math.nan)
        log.info("%s: done in %.1f s (%s)", name, time.perf_counter() - start,
                 ", ".join(f"{m['protocol']} Dice {m['dice_mean']:.3f} mAP {m['segm_mAP']:.3f}"
                           for m in metrics))
    # 4. The tables across methods: interactive rows, then the report.
    if noc_rows:
        write_json(out / "interactive.json", noc_rows)
        write_csv(out / "interactive.csv", noc_rows)
    if report:
        from ultrasam.evaluate.report import write_report

        write_report(out, all_metrics, all_sweeps, gt, interactive=noc_rows)
    return {"metrics": all_metrics, "sweeps": all_sweeps, "interactive": interactive,
            "out_dir": str(out)}
