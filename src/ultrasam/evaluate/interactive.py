"""Interactive quality, measured the standard way: NoC@85 / NoC@90 and mean IoU after k clicks.

The click protocol of the interactive-segmentation literature (RITM, "Reviving Iterative
Training with Mask Guidance"; SAM's interactive evaluation), applied to every promptable
ground-truth instance:

1. Before the first click the prediction is empty, so click 1 is
   :func:`ultrasam.evaluate.prompts.corrective_click` of an empty mask: a positive click at the
   interior-most pixel of the object.
2. After each prediction the next click is ``corrective_click`` of that prediction: at the
   interior-most pixel of the larger (deeper) error region, positive in a missed region, negative
   in a false one. Every click so far goes to the model (B x N x 2 points, B x N labels).
3. ``mask_prompt`` (default on, as in RITM and SAM): the previous prediction's low-resolution
   logits are passed as the mask prompt with clicks 2, 3, ...; off, each prediction sees the
   clicks only.
4. Output selection: click 1 takes the model's multimask output and keeps the mask with the
   highest predicted IoU (SAM's rule for one ambiguous point); later clicks are unambiguous and
   take the single-mask output.
5. An instance stops after ``max_clicks`` clicks, or once its IoU has reached the highest
   threshold and it has had the ``max(miou_at)`` clicks that the mean-IoU columns need. A
   perfect prediction gets no further click (its mask and IoU stay as they are).

Per instance: ``NoC@t`` = the first click count whose IoU is >= t, ``max_clicks`` when never
reached (then the instance is a *failure* at t); ``IoU@k`` = the IoU after k clicks. Reported per
dataset and overall: mean NoC@85 / NoC@90 (95 % bootstrap CI), failures at each threshold, mean
IoU@1 / @3 / @5. Baselines that take a box (ellipse, GrabCut) take no clicks: they have no
numbers here, and the report says so.

All instances of one image are decoded together in each click round (every active instance has
had the same number of clicks, so their point tensors stack), in chunks of ``BATCH`` to bound
memory. This module knows nothing of models: it drives a :class:`ClickDecoder`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ultrasam.evaluate.metrics import iou, summarise
from ultrasam.evaluate.prompts import corrective_click

NOC_THRESHOLDS = (0.85, 0.90)
MIOU_AT = (1, 3, 5)
DEFAULT_MAX_CLICKS = 20
# A hard bound on the clicks asked for (each click is one decode per instance).
CLICK_LIMIT = 100
# Instances decoded per call: bounds the memory of one click round on a crowded image.
BATCH = 32
NOT_APPLICABLE = "takes a box, not clicks: no interactive numbers"


class ClickDecoder(Protocol):
    """Decodes B instances of the current image from their clicks.

    ``points``: B x N x 2 float xy in image pixels; ``labels``: B x N int (1 positive, 0
    negative); ``previous``: per instance, the low-res logits (1 x L x L, opaque to this module)
    returned for it by the previous call, or None for no mask prompt; ``multimask``: whether to
    pick among the multimask outputs. Returns (masks B x H x W bool, low-res logits: a sequence
    of B opaque per-instance items to pass back as ``previous``).
    """

    def __call__(self, points: np.ndarray, labels: np.ndarray, previous: Sequence[Any] | None,
                 multimask: bool) -> tuple[np.ndarray, Sequence[Any]]: ...


@dataclass(frozen=True)
class NocSettings:
    """The protocol's knobs (defaults: the standard 20 clicks, mask prompt on)."""

    max_clicks: int = DEFAULT_MAX_CLICKS
    mask_prompt: bool = True
    thresholds: tuple[float, ...] = NOC_THRESHOLDS
    miou_at: tuple[int, ...] = MIOU_AT

    def __post_init__(self) -> None:
        if isinstance(self.max_clicks, bool) or not isinstance(self.max_clicks, int) \
                or not 1 <= self.max_clicks <= CLICK_LIMIT:
            raise ValueError(f"max_clicks must be an integer in [1, {CLICK_LIMIT}], got "
                             f"{self.max_clicks!r}")
        if not self.thresholds or not all(0 < t <= 1 for t in self.thresholds):
            raise ValueError(f"IoU thresholds must be in (0, 1], got {self.thresholds!r}")
        if not self.miou_at or not all(isinstance(k, int) and k >= 1 for k in self.miou_at):
            raise ValueError(f"miou_at must be click counts >= 1, got {self.miou_at!r}")

    @property
    def reported_k(self) -> tuple[int, ...]:
        """The ``miou_at`` click counts the run reaches (those <= ``max_clicks``)."""
        return tuple(k for k in self.miou_at if k <= self.max_clicks)

    def as_dict(self) -> dict[str, Any]:
        return {"max_clicks": self.max_clicks, "mask_prompt": self.mask_prompt,
                "thresholds": list(self.thresholds), "miou_at": list(self.miou_at)}


@dataclass
class Trace:
    """One instance's run: ``ious[i]`` = IoU after click i + 1; ``clicks`` (x, y, label) given
    (shorter than ``ious`` when the prediction became perfect and needed no further click)."""

    ious: list[float] = field(default_factory=list)
    clicks: list[tuple[float, float, int]] = field(default_factory=list)


def _stopped(trace: Trace, s: NocSettings) -> bool:
    n = len(trace.ious)
    if n >= s.max_clicks:
        return True
    reached = max(trace.ious, default=0.0) >= max(s.thresholds)
    return reached and n >= min(max(s.miou_at), s.max_clicks)


def simulate(decode: ClickDecoder, gts: Sequence[np.ndarray], rng: np.random.Generator,
             settings: NocSettings = NocSettings()) -> list[Trace]:
    """Run the click protocol on the H x W bool ground-truth masks of one image.

    ``rng`` breaks ties between equally deep click positions (seed it per image for
    order-independent results). Returns one :class:`Trace` per mask.
    """
    n = len(gts)
    masks = [np.zeros(np.shape(g), bool) for g in gts]
    previous: list[Any] = [None] * n
    points: list[list[np.ndarray]] = [[] for _ in range(n)]
    labels: list[list[int]] = [[] for _ in range(n)]
    traces = [Trace() for _ in range(n)]
    active = list(range(n))
    for round_ in range(1, settings.max_clicks + 1):
        todo = []
        for k in active:
            click = corrective_click(masks[k], gts[k], rng)
            if click is None:
                # Perfect: nothing to correct, the mask (and its IoU of 1) stays.
                traces[k].ious.append(1.0)
                continue
            xy, label = click
            points[k].append(xy)
            labels[k].append(label)
            traces[k].clicks.append((float(xy[0]), float(xy[1]), int(label)))
            todo.append(k)
        for start in range(0, len(todo), BATCH):
            chunk = todo[start:start + BATCH]
            # Every instance clicked in this round has been clicked in every earlier round
            # (a perfect one never is again), so all carry ``round_`` points and stack.
            pts = np.stack([np.stack(points[k]) for k in chunk])
            lab = np.array([labels[k] for k in chunk], np.int64)
            prev = [previous[k] for k in chunk] if settings.mask_prompt and round_ > 1 else None
            out_masks, out_low = decode(pts, lab, prev, round_ == 1)
            for j, k in enumerate(chunk):
                masks[k] = np.asarray(out_masks[j], bool)
                previous[k] = out_low[j]
                traces[k].ious.append(iou(masks[k], gts[k]))
        active = [k for k in active if not _stopped(traces[k], settings)]
        if not active:
            break
    return traces


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> tuple[int, bool]:
    """(clicks needed to reach ``threshold``, reached?): ``max_clicks`` when never reached."""
    for i, v in enumerate(ious[:max_clicks]):
        if v >= threshold:
            return i + 1, True
    return max_clicks, False


def pct_label(t: float) -> str:
    """The threshold as it appears in keys: 0.85 -> ``"85"`` (``noc_85``, ``failed_85``)."""
    return f"{round(t * 100):d}"


def instance_record(trace: Trace, settings: NocSettings) -> dict[str, Any]:
    """The per-instance numbers: ``noc_85``, ``failed_85``, ..., ``iou_at_1``, ...,
    ``n_clicks``, ``final_iou`` (the trace itself stays in ``ious`` / ``clicks``)."""
    rec: dict[str, Any] = {"n_clicks": len(trace.clicks), "final_iou": trace.ious[-1]}
    for t in settings.thresholds:
        clicks, reached = noc(trace.ious, t, settings.max_clicks)
        rec[f"noc_{pct_label(t)}"] = clicks
        rec[f"failed_{pct_label(t)}"] = not reached
    for k in settings.reported_k:
        rec[f"iou_at_{k}"] = trace.ious[k - 1]
    rec["ious"] = list(trace.ious)
    rec["clicks"] = [list(c) for c in trace.clicks]
    return rec


def summarise_noc(records: Sequence[Mapping[str, Any]], settings: NocSettings,
                  seed: int = 0) -> dict[str, Any]:
    """Mean NoC (with 95 % bootstrap CI) and failures per threshold, mean IoU@k, of records
    made by :func:`instance_record`."""
    out: dict[str, Any] = {"n_instances": len(records)}
    for t in settings.thresholds:
        p = pct_label(t)
        s = summarise((float(r[f"noc_{p}"]) for r in records), "mean", seed)
        out[f"noc_{p}"] = s["mean"]
        out[f"noc_{p}_ci"] = [s["ci_low"], s["ci_high"]]
        out[f"failures_{p}"] = sum(1 for r in records if r[f"failed_{p}"])
    for k in settings.reported_k:
        out[f"miou_at_{k}"] = summarise((float(r[f"iou_at_{k}"]) for r in records), "mean",
                                        seed)["mean"]
    out["mean_clicks_given"] = (float(np.mean([r["n_clicks"] for r in records]))
                                if records else None)
    return out


def summarise_by_dataset(records: Sequence[Mapping[str, Any]], settings: NocSettings,
                         seed: int = 0) -> dict[str, Any]:
    """``{"all": ..., "by_dataset": {name: ...}, "by_structure": {"dataset/structure": ...}}``."""
    by_dataset: dict[str, list[Mapping[str, Any]]] = {}
    by_structure: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_dataset.setdefault(str(r["dataset"]), []).append(r)
        by_structure.setdefault(f"{r['dataset']}/{r['structure']}", []).append(r)
    return {
        "all": summarise_noc(records, settings, seed),
        "by_dataset": {k: summarise_noc(v, settings, seed) for k, v in sorted(by_dataset.items())},
        "by_structure": {k: summarise_noc(v, settings, seed)
                         for k, v in sorted(by_structure.items())},
    }


def table_columns(settings: NocSettings) -> list[str]:
    """Column names of the per-dataset interactive table (``interactive.csv``)."""
    cols = []
    for t in settings.thresholds:
        cols += [f"noc_{pct_label(t)}", f"failures_{pct_label(t)}"]
    return cols + [f"miou_at_{k}" for k in settings.reported_k]


def table_rows(name: str, summary: Mapping[str, Any], settings: NocSettings
               ) -> list[dict[str, Any]]:
    """One row per dataset plus an ``all`` row for one checkpoint's :func:`summarise_by_dataset`."""
    rows = []
    groups = [("all", summary["all"]), *summary["by_dataset"].items()]
    for dataset, s in groups:
        rows.append({"checkpoint": name, "dataset": dataset, "n_instances": s["n_instances"],
                     **{c: s[c] for c in table_columns(settings)},
                     "max_clicks": settings.max_clicks, "mask_prompt": settings.mask_prompt,
                     "note": ""})
    return rows


def not_applicable_row(name: str, settings: NocSettings) -> dict[str, Any]:
    """The table row of a method that takes no clicks: no numbers, and why."""
    return {"checkpoint": name, "dataset": "all", "n_instances": None,
            **{c: None for c in table_columns(settings)},
            "max_clicks": settings.max_clicks, "mask_prompt": settings.mask_prompt,
            "note": NOT_APPLICABLE}
