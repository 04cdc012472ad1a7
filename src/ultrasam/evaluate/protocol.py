"""The paper's evaluation protocol, robustness sweeps and baselines, written to a folder.

Protocols (docs/reference/ultrasam.md §5), one prediction per ground-truth instance:

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
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ultrasam.evaluate import prompts as P
from ultrasam.evaluate.baselines import BASELINES, baseline_predict
from ultrasam.evaluate.coco_eval import (
    GroundTruth,
    GtImage,
    coco_map,
    encode_result,
    load_ground_truth,
)
from ultrasam.evaluate.files import finite, read_image, write_csv, write_json
from ultrasam.evaluate.interactive import (
    NocSettings,
    instance_record,
    not_applicable_row,
    pct_label,
    simulate,
    summarise_by_dataset,
    table_rows,
)
from ultrasam.evaluate.metrics import aggregate, instance_scores, summarise

log = logging.getLogger(__name__)

PROTOCOLS = ("box", "box_refine", "point", "point_refine")
NOC = "noc"
ALL_PROTOCOLS = (*PROTOCOLS, NOC)
BASELINE_PROTOCOLS = ("box",)
N_RANDOM_POINTS = 3
DEFAULT_NAME = "default"
# Prompt streams for image_rng: fixed numbers so that prompts never depend on evaluation order.
_JITTER_STREAM, _POINT_STREAM, _CLICK_STREAM, _NOC_STREAM = 100, 200, 300, 400
# The interactive protocol logs its progress every this many images (it is the slow one).
_NOC_PROGRESS_EVERY = 50


# ----------------------------------------------------------------------------- runners

@dataclass
class Decoded:
    """One decoded batch: ``masks`` B x H x W bool, ``scores`` (B,), ``low_res`` B x 1 x L x L."""

    masks: np.ndarray
    scores: np.ndarray
    low_res: Any = None  # torch tensor (model) or None (baselines)


class ModelRunner:
    """Decodes all instances of an image in one ``Predictor.predict_torch`` call."""

    def __init__(self, model: Any) -> None:
        from ultrasam import Predictor

        self.predictor = Predictor(model)
        self.size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)
        self.size = (int(image.shape[0]), int(image.shape[1]))

    def decode(self, *, boxes: np.ndarray | None = None, points: np.ndarray | None = None,
               labels: np.ndarray | None = None, mask_input: Any = None,
               multimask: bool = False, refine: bool = False) -> Decoded:
        """Boxes B x 4 XYXY and/or points B x N x 2 xy (+ labels B x N), original frame."""
        import torch

        pred = self.predictor
        device = getattr(pred, "device", None) or torch.device("cpu")
        kw: dict[str, Any] = {"point_coords": None, "point_labels": None, "boxes": None,
                              "mask_input": mask_input}
        if points is not None:
            coords = pred.transform.apply_coords(np.asarray(points, np.float64), self.size)
            kw["point_coords"] = torch.as_tensor(coords, dtype=torch.float32, device=device)
            kw["point_labels"] = torch.as_tensor(labels, dtype=torch.int64, device=device)
        if boxes is not None:
            tb = pred.transform.apply_boxes(np.asarray(boxes, np.float64), self.size)
            kw["boxes"] = torch.as_tensor(tb, dtype=torch.float32, device=device)
        with torch.inference_mode():
            masks, iou, low_res = pred.predict_torch(multimask_output=multimask, refine=refine,
                                                     **kw)
        # Several outputs: keep the one with the highest predicted IoU (the paper's rule).
        best = iou.argmax(dim=1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return Decoded(masks[rows, best].bool().cpu().numpy(),
                       iou[rows, best].float().cpu().numpy(),
                       low_res[rows, best][:, None])


@dataclass
class Method:
    """A model checkpoint (``runner`` set) or a baseline (``baseline`` set) under evaluation."""

    name: str
    runner: ModelRunner | None = None
    baseline: str | None = None

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.runner is not None else BASELINE_PROTOCOLS


# ----------------------------------------------------------------------------- collection

@dataclass
class TaskResult:
    """Predictions and per-instance records of one protocol or sweep setting."""

    results: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    # Wall and process CPU time spent in the task (reported for the interactive protocol).
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    n_images: int = 0


@dataclass
class _ImageContext:
    image: np.ndarray
    info: GtImage
    gts: list[np.ndarray]   # promptable GT masks, H x W bool each
    ann_ids: list[int]
    structures: list[str]
    boxes: np.ndarray       # B x 4 XYXY exact GT boxes
    centroids: np.ndarray   # B x 2 xy


def _record(store: dict[str, TaskResult], key: str, ctx: _ImageContext, out: Decoded,
            with_hd95: bool) -> None:
    task = store.setdefault(key, TaskResult())
    for k, (mask, score) in enumerate(zip(out.masks, out.scores)):
        s = instance_scores(mask, ctx.gts[k], ctx.info.spacing_mm, with_hd95=with_hd95)
        task.results.append(encode_result(ctx.info.image_id, mask, float(score)))
        task.records.append({"ann_id": ctx.ann_ids[k], "image_id": ctx.info.image_id,
                             "dataset": ctx.info.dataset,
                             "structure": ctx.structures[k],
                             "score": float(score), "pred_area": int(mask.sum()),
                             **asdict(s)})


def _decode_method(method: Method, ctx: _ImageContext, *, boxes: np.ndarray | None = None,
                   points: np.ndarray | None = None, labels: np.ndarray | None = None,
                   refine: bool = False, multimask: bool = False,
                   mask_input: Any = None) -> Decoded:
    if method.runner is not None:
        return method.runner.decode(boxes=boxes, points=points, labels=labels,
                                    mask_input=mask_input, multimask=multimask, refine=refine)
    if boxes is None or points is not None or refine:
        raise ValueError(f"baseline {method.baseline!r} takes exact boxes only")
    masks, scores = baseline_predict(str(method.baseline), ctx.image, boxes)
    return Decoded(masks, scores)


def _run_protocols(method: Method, ctx: _ImageContext, protocols: Sequence[str],
                   store: dict[str, TaskResult]) -> dict[str, Decoded]:
    n = len(ctx.gts)
    done: dict[str, Decoded] = {}
    for protocol in protocols:
        if protocol not in method.protocols:
            continue
        refine = protocol.endswith("_refine")
        if protocol.startswith("box"):
            out = _decode_method(method, ctx, boxes=ctx.boxes, refine=refine)
        else:
            out = _decode_method(method, ctx, points=ctx.centroids[:, None, :],
                                 labels=np.ones((n, 1), np.int64), refine=refine,
                                 multimask=not refine)
        _record(store, protocol, ctx, out, with_hd95=True)
        done[protocol] = out
    return done


def _run_clicks(method: Method, ctx: _ImageContext, seed: int, store: dict[str, TaskResult],
                first: Decoded | None) -> None:
    """``first``: the ``point`` protocol's output (the centroid click), when already decoded."""
    n = len(ctx.gts)
    rng = P.image_rng(seed, ctx.info.image_id, _CLICK_STREAM)
    points = [[c] for c in ctx.centroids]
    labels = [[1] for _ in range(n)]
    out = first if first is not None else _decode_method(
        method, ctx, points=ctx.centroids[:, None, :], labels=np.ones((n, 1), np.int64),
        multimask=True)
    masks, scores, low_res = out.masks.copy(), out.scores.copy(), out.low_res
    _record(store, "clicks|point|0", ctx, Decoded(masks, scores), with_hd95=False)
    for n_clicks in range(1, P.MAX_CLICKS + 1):
        todo = []
        for k in range(n):
            click = P.corrective_click(masks[k], ctx.gts[k], rng)
            if click is not None:
                points[k].append(click[0])
                labels[k].append(click[1])
                todo.append(k)
        if todo:
            # An instance gets a click at every step until it is perfect (then its mask no
            # longer changes), so all instances clicked now carry the same number of points.
            out = _decode_method(method, ctx, points=np.stack([np.stack(points[k]) for k in todo]),
                                 labels=np.array([labels[k] for k in todo], np.int64),
                                 mask_input=low_res[todo], multimask=False)
            masks[todo], scores[todo] = out.masks, out.scores
            low_res = low_res.clone()
            low_res[todo] = out.low_res
        _record(store, f"clicks|point|{n_clicks}", ctx, Decoded(masks, scores), with_hd95=False)


def _run_sweeps(method: Method, ctx: _ImageContext, seed: int, store: dict[str, TaskResult],
                done: dict[str, Decoded]) -> None:
    """``done``: the protocols' outputs on this image, reused where a sweep repeats them."""
    h, w = ctx.image.shape[:2]
    refines = (False, True) if method.runner is not None else (False,)
    for li, level in enumerate(P.JITTER_LEVELS):
        rng = P.image_rng(seed, ctx.info.image_id, _JITTER_STREAM + li)
        boxes = np.stack([P.jitter_box(b, level, rng, h, w) for b in ctx.boxes])
        for refine in refines:
            protocol = "box_refine" if refine else "box"
            # Jitter 0 is the exact box: the same prompt, so the same (deterministic) output.
            out = done.get(protocol) if level == 0 else None
            if out is None:
                out = _decode_method(method, ctx, boxes=boxes, refine=refine)
            _record(store, f"box_jitter|{protocol}|{level:g}", ctx, out, with_hd95=False)
    if method.runner is None:
        return
    n = len(ctx.gts)
    for draw in range(N_RANDOM_POINTS):
        rng = P.image_rng(seed, ctx.info.image_id, _POINT_STREAM + draw)
        pts = np.stack([P.random_interior_point(g, rng) for g in ctx.gts])[:, None, :]
        for refine in refines:
            out = _decode_method(method, ctx, points=pts, labels=np.ones((n, 1), np.int64),
                                 refine=refine, multimask=not refine)
            protocol = "point_refine" if refine else "point"
            _record(store, f"random_point|{protocol}|{draw}", ctx, out, with_hd95=False)
    _run_clicks(method, ctx, seed, store, done.get("point"))


def _run_noc(runner: ModelRunner, ctx: _ImageContext, seed: int,
             store: dict[str, TaskResult], settings: NocSettings) -> None:
    """The interactive protocol on one image, all its instances batched per click round."""
    import torch

    def decode(points: np.ndarray, labels: np.ndarray, previous: Sequence[Any] | None,
               multimask: bool) -> tuple[np.ndarray, Sequence[Any]]:
        mask_input = None if previous is None else torch.stack(list(previous))  # B x 1 x L x L
        out = runner.decode(points=points, labels=labels, mask_input=mask_input,
                            multimask=multimask)
        return out.masks, list(out.low_res)  # per instance 1 x L x L

    task = store.setdefault(NOC, TaskResult())
    start, cpu = time.perf_counter(), time.process_time()
    traces = simulate(decode, ctx.gts, P.image_rng(seed, ctx.info.image_id, _NOC_STREAM),
                      settings)
    task.seconds += time.perf_counter() - start
    task.cpu_seconds += time.process_time() - cpu
    task.n_images += 1
    for k, trace in enumerate(traces):
        task.records.append({"ann_id": ctx.ann_ids[k], "image_id": ctx.info.image_id,
                             "dataset": ctx.info.dataset, "structure": ctx.structures[k],
                             **instance_record(trace, settings)})
    if task.n_images % _NOC_PROGRESS_EVERY == 0:
        clicks = sum(r["n_clicks"] for r in task.records)
        log.info("noc: %d images, %d clicks, %.1f clicks/s (%.3f CPU s per click)",
                 task.n_images, clicks, clicks / max(task.seconds, 1e-9),
                 task.cpu_seconds / max(clicks, 1))


def _contexts(gt: GroundTruth, min_area: int) -> Any:
    """Yield (context or None, number of too-small instances) per image."""
    for info in gt.images:
        image = read_image(info.path, info.height, info.width)
        gts, ann_ids, structures, boxes, small = [], [], [], [], 0
        for inst in info.instances:
            m = inst.mask(info.height, info.width)
            if not P.is_promptable(m, min_area):
                small += 1
                continue
            gts.append(m)
            ann_ids.append(inst.ann_id)
            structures.append(inst.structure)
            boxes.append(P.gt_box_xyxy(inst.bbox))
        if not gts:
            yield None, small
            continue
        yield _ImageContext(image, info, gts, ann_ids, structures, np.stack(boxes),
                            np.stack([P.centroid_point(m) for m in gts])), small


def run_method(method: Method, gt: GroundTruth, protocols: Sequence[str], sweeps: bool,
               seed: int = 0, min_area: int = P.MIN_PROMPT_AREA,
               noc: NocSettings | None = None) -> tuple[dict[str, TaskResult], int]:
    """Evaluate one method on every image. Returns (results per task key, too-small count).

    Task keys: a protocol name, or ``"<sweep>|<protocol>|<level>"`` for sweep settings.
    ``noc`` in ``protocols`` runs the interactive protocol (models only) with ``noc``'s settings
    (default ``NocSettings()``).
    """
    store: dict[str, TaskResult] = {}
    n_small = 0
    for ctx, small in _contexts(gt, min_area):
        n_small += small
        if ctx is None:
            continue
        if method.runner is not None:
            method.runner.set_image(ctx.image)
        done = _run_protocols(method, ctx, protocols, store)
        if sweeps:
            _run_sweeps(method, ctx, seed, store, done)
        if NOC in protocols and method.runner is not None:
            _run_noc(method.runner, ctx, seed, store, noc or NocSettings())
    return store, n_small


# ----------------------------------------------------------------------------- writing

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


def _sweep_rows(name: str, store: dict[str, TaskResult], gt: GroundTruth,
                seed: int) -> list[dict[str, Any]]:
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


def _write_method(out_dir: Path, name: str, store: dict[str, TaskResult], gt: GroundTruth,
                  n_small: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
    sweep_rows = _sweep_rows(name, store, gt, seed)
    if sweep_rows:
        write_json(out_dir / name / "sweeps" / "sweeps.json", sweep_rows)
        write_csv(out_dir / name / "sweeps" / "sweeps.csv", sweep_rows)
    return metrics, sweep_rows


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


def _write_noc(out_dir: Path, name: str, task: TaskResult, gt: GroundTruth, n_small: int,
               settings: NocSettings, seed: int) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- entry point

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
    bad = [p for p in protocols if p not in ALL_PROTOCOLS]
    if bad or not protocols:
        raise ValueError(f"unknown protocols {bad or list(protocols)}; expected a subset of "
                         f"{list(ALL_PROTOCOLS)}")
    noc_settings = noc or NocSettings()
    plan = _methods_plan(checkpoints, baselines)
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
    for name, path, baseline in plan:
        start = time.perf_counter()
        if baseline is None:
            from ultrasam import load_model

            method = Method(name, runner=ModelRunner(load_model(path, device=device)))
        else:
            method = Method(name, baseline=baseline)
        store, n_small = run_method(method, gt, protocols, sweeps, seed, noc=noc_settings)
        metrics, sweep_rows = _write_method(out, name, store, gt, n_small, seed)
        all_metrics += metrics
        all_sweeps += sweep_rows
        if NOC in protocols and method.runner is None:
            noc_rows.append(not_applicable_row(name, noc_settings))
        elif NOC in store:
            m = _write_noc(out, name, store[NOC], gt, n_small, noc_settings, seed)
            interactive.append(m)
            noc_rows += table_rows(name, m, noc_settings)
            log.info("%s noc: %s; %d instances, %d clicks in %.1f s (%.1f clicks/s)", name,
                     noc_text(m), m["n_instances"], m["timing"]["clicks"],
                     m["timing"]["seconds"], m["timing"]["clicks_per_s"] or math.nan)
        log.info("%s: done in %.1f s (%s)", name, time.perf_counter() - start,
                 ", ".join(f"{m['protocol']} Dice {m['dice_mean']:.3f} mAP {m['segm_mAP']:.3f}"
                           for m in metrics))
    if noc_rows:
        write_json(out / "interactive.json", noc_rows)
        write_csv(out / "interactive.csv", noc_rows)
    if report:
        from ultrasam.evaluate.report import write_report

        write_report(out, all_metrics, all_sweeps, gt, interactive=noc_rows)
    return {"metrics": all_metrics, "sweeps": all_sweeps, "interactive": interactive,
            "out_dir": str(out)}
