"""Segment one item and write its files: the function every engine runs, in any process.

The model is loaded once per process (cached by its :class:`ModelSpec`) and each thread gets its
own :class:`~ultrasam.inference.predictor.Predictor` (a predictor holds one image's state, so
threads of one Dask worker must not share it; the weights are shared read-only).

Per item, under ``out/<key>``: ``.mask.png`` (one object) or ``.objK.mask.png`` (several),
``.candC.mask.png`` for each multimask candidate when asked, ``.overlay.png``, ``.seg.dcm`` for
DICOM inputs when asked, and last ``.json``, the record, whose presence marks the item done.
An item that fails leaves none of its files behind and returns a record with the error.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .files import remove_files, write_json_atomic, write_png_atomic
from .items import Item
from .masks import (
    bbox_xywh,
    encode_rle,
    finite_or_none,
    mask_prompt_logits,
    polygons,
    read_mask_prompt,
)
from .overlay import overlay
from .prompts import Prompt

log = logging.getLogger(__name__)

SCHEMA = "ultrasam.prediction/2"


class ModelLoadFailed(ValueError):
    """A model that cannot be loaded, for loaders whose errors are not already the project's own
    one-line errors. Loading failures stop the whole run (every item would fail the same way)."""


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a checkpoint (None = the bundled default model), its format, the device.

    ``backend="onnx"``: ``checkpoint`` is an ``ultrasam export onnx`` folder, run by
    :class:`ultrasam.inference.onnx.OnnxPredictor` (ONNX Runtime, no torch) with ``threads``
    intra-op threads (None: ONNX Runtime's default).
    """

    checkpoint: str | None = None
    format: str | None = None
    device: str = "cpu"
    backend: str = "torch"
    threads: int | None = None


@dataclass(frozen=True)
class ItemOptions:
    """What to compute and write per item (see the module docstring)."""

    refine: bool = False
    candidates: bool = False
    polygons: bool = False
    overlay: bool = True
    dicom_seg: bool = False


@dataclass(frozen=True)
class Job:
    """Everything a worker needs besides the item; small and picklable."""

    model: ModelSpec
    options: ItemOptions
    out_dir: str
    model_identity: dict[str, Any] = field(default_factory=dict)
    software_version: str = "unknown"


_MODELS: dict[ModelSpec, Any] = {}
_MODELS_LOCK = threading.Lock()
_LOCAL = threading.local()


def _predictor(spec: ModelSpec) -> Any:
    """This thread's predictor for ``spec``, loading the model on the process's first use."""
    cache = getattr(_LOCAL, "predictors", None)
    if cache is None:
        cache = _LOCAL.predictors = {}
    if spec not in cache and spec.backend == "onnx":
        from ..onnx import OnnxPredictor

        try:
            cache[spec] = OnnxPredictor(spec.checkpoint or "", threads=spec.threads)
        except Exception as e:  # one line for the driver, whatever the loader raised
            raise ModelLoadFailed(str(e).splitlines()[0] if str(e) else type(e).__name__) \
                from e
    if spec not in cache:
        from ...weights.checkpoints import load_model
        from ..predictor import Predictor

        with _MODELS_LOCK:
            if spec not in _MODELS:
                _MODELS[spec] = load_model(spec.checkpoint, device=spec.device,
                                           format=spec.format)
        cache[spec] = Predictor(_MODELS[spec])
    return cache[spec]


def request_of(item: Item, job: Job) -> dict[str, Any]:
    """What a stored record must match for the item to be skipped on a rerun (JSON form)."""
    req = {**item.as_request(), "model": job.model_identity, "options": asdict(job.options)}
    return json.loads(json.dumps(req))


def failure_record(item: Item, job: Job, error: BaseException) -> dict[str, Any]:
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return {"schema": SCHEMA, "status": "failed", "error": message,
            "error_type": type(error).__name__, "id": item.id, "key": item.key,
            "image": str(item.path), "frame": item.frame, "slice": item.slice, "axis": item.axis}


def run_item(item: Item, job: Job) -> dict[str, Any]:
    """Segment ``item``, write its files, return its record (``status`` ok or failed).

    Raises:
        whatever ``load_model`` raises (``CheckpointError``, ...): the model cannot be loaded,
        which is no item's fault, so the run stops with the loader's own error.
    """
    out = Path(job.out_dir)
    json_path = out / f"{item.key}.json"
    # A redone item's earlier files must not outlive it: its record goes first (so a crash
    # leaves the item "not done"), then whatever the new outputs do not replace.
    stale = _previous_outputs(out, json_path)
    json_path.unlink(missing_ok=True)
    written: list[Path] = []
    predictor = None if item.problems else _predictor(job.model)  # outside the item's try
    try:
        if predictor is None:
            raise ValueError("; ".join(item.problems))
        record = _segment(predictor, item, job, out, written)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, record)
        remove_files([p for p in stale if p not in set(written)], out)
        return record
    except Exception as e:  # keep going past bad items; the record says why
        remove_files(written + stale, out)
        log.debug("%s failed", item.label(), exc_info=True)
        return failure_record(item, job, e)


def _previous_outputs(out: Path, json_path: Path) -> list[Path]:
    """Files listed by an earlier record of this item (inside ``out`` only)."""
    try:
        old = json.loads(json_path.read_text(encoding="utf-8"))
        rels = [o["mask"] for o in old.get("objects", [])]
        rels += [c["mask"] for o in old.get("objects", []) for c in o.get("candidates", [])]
        rels += [v for k, v in old.get("outputs", {}).items() if k != "json"]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
    root = out.resolve()
    paths = [(out / r) for r in rels if isinstance(r, str)]
    return [p for p in paths if root in p.resolve().parents]


def _best(scores: np.ndarray) -> int:
    finite = np.where(np.isfinite(scores), scores, -np.inf)
    return int(np.argmax(finite))


def _points(prompt: Prompt) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not prompt.points:
        return None, None
    return np.array(prompt.points, float), np.array(prompt.labels)


def _segment(predictor: Any, item: Item, job: Job, out: Path,
             written: list[Path]) -> dict[str, Any]:
    opts = job.options
    predictor.set_image(item.path, frame=item.frame, slice=item.slice, axis=item.axis)
    h, w = predictor.original_size
    model = predictor.model
    warnings = list(predictor.image_warnings)
    meta = predictor.image_meta
    base = out / item.key
    base.parent.mkdir(parents=True, exist_ok=True)

    def save_mask(path: Path, mask: np.ndarray) -> str:
        write_png_atomic(path, mask.astype(np.uint8) * 255)
        written.append(path)
        return path.relative_to(out).as_posix()

    objects: list[dict[str, Any]] = []
    best_masks: list[np.ndarray] = []
    many = len(item.prompts) > 1
    for k, prompt in enumerate(item.prompts):
        stem = f"{base}.obj{k}" if many else str(base)
        mask_input = None
        if prompt.mask is not None:
            m = read_mask_prompt(prompt.mask, (h, w))
            mask_input = mask_prompt_logits(m, predictor.input_size, model.img_size,
                                            model.config.mask_size)
        coords, labels = _points(prompt)
        box = np.array(prompt.box, float) if prompt.box is not None else None
        # One positive point is ambiguous: keep the best of SAM's three candidates. Several
        # points, a box or a mask make the prompt specific: SAM's single-mask output.
        ambiguous = len(prompt.points) == 1 and box is None and mask_input is None
        masks, scores, _ = predictor.predict(coords, labels, box, mask_input,
                                             multimask_output=ambiguous and not opts.refine,
                                             refine=opts.refine)
        best = _best(scores)
        mask = masks[best]
        if not np.isfinite(scores).all():
            warnings.append(f"object {k}: the model returned non-finite scores (broken "
                            "weights?)")
        area_mm2, area_warnings = _area_mm2(mask, predictor.spacing_mm, meta.get("calibration"))
        warnings += [w_ for w_ in area_warnings if w_ not in warnings]
        obj: dict[str, Any] = {
            "prompt": prompt.as_dict(), "scores": [finite_or_none(s) for s in scores],
            "selected": best, "score": finite_or_none(scores[best]), "rle": encode_rle(mask),
            "bbox": bbox_xywh(mask), "area_px": int(mask.sum()), "area_mm2": area_mm2,
            "mask": save_mask(Path(f"{stem}.mask.png"), mask)}
        if opts.polygons:
            obj["polygons"] = polygons(mask)
        if opts.candidates:
            if ambiguous:
                cand_masks, cand_scores = masks, scores
            else:
                cand_masks, cand_scores, _ = predictor.predict(coords, labels, box, mask_input,
                                                               multimask_output=True)
            obj["candidates"] = [
                {"score": finite_or_none(s), "rle": encode_rle(cm), "area_px": int(cm.sum()),
                 "mask": save_mask(Path(f"{stem}.cand{c}.mask.png"), cm)}
                for c, (cm, s) in enumerate(zip(cand_masks, cand_scores))]
        if item.coco is not None:
            obj["annotation_id"] = item.coco.annotation_ids[k]
            obj["category_id"] = item.coco.category_ids[k]
        objects.append(obj)
        best_masks.append(mask)
    outputs: dict[str, Any] = {"json": f"{item.key}.json"}
    if opts.overlay:
        path = Path(f"{base}.overlay.png")
        write_png_atomic(path, overlay(predictor.image_rgb, best_masks, item.prompts))
        written.append(path)
        outputs["overlay"] = path.relative_to(out).as_posix()
    if opts.dicom_seg and meta.get("format") == "DICOM":
        from .dicom_seg import write_dicom_seg

        path = Path(f"{base}.seg.dcm")
        try:
            write_dicom_seg(path, item.path, meta.get("frame", item.frame), best_masks,
                            job.software_version)
            written.append(path)
            outputs["dicom_seg"] = path.relative_to(out).as_posix()
        except ValueError as e:
            warnings.append(str(e))
    record: dict[str, Any] = {
        "schema": SCHEMA, "status": "ok", "error": None, "id": item.id, "key": item.key,
        "image": str(item.path), "frame": item.frame, "slice": item.slice, "axis": item.axis,
        "format": meta.get("format"), "size": [h, w],
        "checkpoint": job.model_identity.get("checkpoint", "default"), "refine": opts.refine,
        "objects": objects, "outputs": outputs,
        "spacing_mm": list(predictor.spacing_mm) if predictor.spacing_mm else None,
        "warnings": warnings, "request": request_of(item, job)}
    if meta.get("format") == "NIFTI":
        record["volume"] = {"slice": meta.get("slice"), "axis": meta.get("axis")}
    if item.coco is not None:
        record["coco_image_id"] = item.coco.image_id
    return record


def _area_mm2(mask: np.ndarray, spacing: tuple[float, float] | None,
              calibration: Any) -> tuple[float | None, list[str]]:
    """Mask area in mm^2: DICOM ultrasound regions decide per mask (the mask must lie inside one
    calibrated region); otherwise the image's spacing, when it has one."""
    if calibration is not None:
        from ...io.dicom import mask_area_mm2

        return mask_area_mm2(mask, calibration)
    if spacing is not None:
        return float(mask.sum()) * spacing[0] * spacing[1], []
    return None, []
