"""Running the protocols: every image of the ground truth through one method.

For each image with promptable instances: the protocols (exact box, centroid point, with and
without refinement), optionally the robustness sweeps (box jitter, random interior points,
corrective clicks) and the interactive NoC protocol; each decoded output is scored against its
instance and stored per task (:class:`~ultrasam.evaluate.tasks.TaskResult`). The rules are
the ones :mod:`ultrasam.evaluate.protocol` documents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ultrasam.evaluate import prompts as P
from ultrasam.evaluate.baselines import baseline_predict
from ultrasam.evaluate.coco_eval import GroundTruth, GtImage, encode_result
from ultrasam.evaluate.files import read_image
from ultrasam.evaluate.interactive import NocSettings, instance_record, simulate
from ultrasam.evaluate.metrics import instance_scores
from ultrasam.evaluate.runner import Decoded, Method, ModelRunner
from ultrasam.evaluate.tasks import NOC, TaskResult

log = logging.getLogger(__name__)

N_RANDOM_POINTS = 3
# Prompt streams for image_rng: fixed numbers so that prompts never depend on evaluation order.
_JITTER_STREAM, _POINT_STREAM, _CLICK_STREAM, _NOC_STREAM = 100, 200, 300, 400
# The interactive protocol logs its progress every this many images (it is the slow one).
_NOC_PROGRESS_EVERY = 50


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


def _contexts(gt: GroundTruth, min_area: int) -> Iterator[tuple[_ImageContext | None, int]]:
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

