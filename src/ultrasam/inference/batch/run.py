"""A batch job from start to end: plan (inputs, outputs, what is already done), run, report.

Results, written to the output folder at the end of every run (also a resumed one, whose
earlier items are read back from their records), in item order whichever engine ran them:

* ``results.jsonl``: one line per item, ``{"index", "image_id", **record}``; ``status`` is
  ``ok`` or ``failed`` with ``error``;
* ``results.coco.json``: COCO results (``image_id``, ``category_id``, ``segmentation`` as
  compressed RLE, ``bbox``, ``area``, ``score``): ids from the input COCO file, else
  ``image_id`` = index + 1 and ``category_id`` = 1;
* ``<volume>.labels.nii.gz`` per NIfTI input when ``nifti_labels`` is on.

Resuming: an item whose record exists, says ok, names files that exist and was made from the
same request (image, frame/slice, prompts, model file, options) is skipped unless
``overwrite``. Failed items are retried on every run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engines import EngineSpec, run_items
from .files import dumps_json, remove_files
from .inputs import collect_items
from .items import Item, assign_keys
from .masks import finite_or_none
from .nifti_labels import VolumeLabels, add_record, write_label_volume
from .prompts import Prompt
from .worker import ItemOptions, Job, ModelSpec, request_of

log = logging.getLogger(__name__)

RESULTS_JSONL = "results.jsonl"
RESULTS_COCO = "results.coco.json"
OnRecord = Callable[[dict[str, Any], bool], None]


@dataclass
class BatchPlan:
    """What a run will do: every item (keys assigned), and which are done already."""

    items: list[Item]
    out_dir: Path
    job: Job
    done: set[int] = field(default_factory=set)
    nifti_labels: bool = False


@dataclass
class Summary:
    """Counts and files of a finished run (``resumed``: items skipped as already done)."""

    total: int = 0
    ok: int = 0
    resumed: int = 0
    failed: int = 0
    out_dir: Path = Path(".")
    results: list[Path] = field(default_factory=list)
    label_volumes: list[Path] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.total} item(s): {self.ok} segmented, {self.resumed} already done, "
                f"{self.failed} failed; results in {self.out_dir / RESULTS_JSONL}")


def model_identity(checkpoint: str | None) -> dict[str, Any]:
    """The model file a result came from (path, size, modification time): a rerun with other
    weights at the same path redoes its items."""
    if checkpoint:
        path = Path(checkpoint)
    else:
        from ...weights.checkpoints import DEFAULT_MODEL_DIR

        path = DEFAULT_MODEL_DIR
    # A native folder's weights, or an ONNX export folder's decoder graph.
    weights = (path / "decoder.onnx" if (path / "decoder.onnx").is_file()
               else path / "model.safetensors") if path.is_dir() else path
    ident: dict[str, Any] = {"checkpoint": os.path.abspath(path) if checkpoint else "default"}
    try:
        st = weights.stat()
        ident.update(bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    except OSError:
        pass  # the loader will say what is wrong with it
    return ident


def _software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ultrasam")
    except PackageNotFoundError:
        return "unknown"


def stored_record(out: Path, item: Item, job: Job) -> dict[str, Any] | None:
    """The item's record from an earlier run when it can be reused (see the module docstring)."""
    try:
        record = json.loads((out / f"{item.key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "ok" \
            or record.get("request") != request_of(item, job):
        return None
    files = [o.get("mask") for o in record.get("objects", [])]
    files += [v for k, v in record.get("outputs", {}).items() if k != "json"]
    if not all(isinstance(f, str) and (out / f).is_file() for f in files):
        return None
    return record


def plan_batch(inputs: list[str | Path], out_dir: str | Path, *, prompt: Prompt | None = None,
               frame: int | None = None, slice: int | None = None, axis: int = 0,
               coco_prompt: str = "box", image_root: str | Path | None = None,
               model: ModelSpec | None = None, options: ItemOptions | None = None,
               nifti_labels: bool = False, overwrite: bool = False) -> BatchPlan:
    """Validate everything that can be checked before any work, and find what is done.

    Raises:
        ValueError: ``out_dir`` is a file, no inputs or prompts, conflicting options.
        ImportError: an optional output (DICOM SEG, NIfTI) whose package is missing.
    """
    model = model or ModelSpec()
    options = options or ItemOptions()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; give a folder for the results")
    if options.candidates and options.refine:
        raise ValueError("all candidates (--candidates) and --refine exclude each other: "
                         "refinement returns one mask")
    if options.dicom_seg:
        from .dicom_seg import require_highdicom

        require_highdicom()
    if nifti_labels:
        from ...io.volumes import require_nibabel

        require_nibabel()
    items = collect_items(list(inputs), prompt, frame, slice, axis, coco_prompt,
                          Path(image_root) if image_root else None, exclude=out)
    if all(not it.prompts for it in items):
        raise ValueError("give at least one --point or a --box, or a manifest or COCO file "
                         "with prompts")
    assign_keys(items)
    job = Job(model=model, options=options, out_dir=os.path.abspath(out),
              model_identity=model_identity(model.checkpoint),
              software_version=_software_version())
    plan = BatchPlan(items=items, out_dir=out, job=job, nifti_labels=nifti_labels)
    if not overwrite and out.is_dir():
        plan.done = {it.index for it in items if stored_record(out, it, job) is not None}
    return plan


def _records(plan: BatchPlan, engine: EngineSpec
             ) -> Iterator[tuple[Item, dict[str, Any], bool]]:
    """(item, record, resumed) in item order: stored records and freshly computed ones."""
    todo = [it for it in plan.items if it.index not in plan.done]
    computed = run_items(todo, plan.job, engine)
    for item in plan.items:
        if item.index in plan.done:
            record = stored_record(plan.out_dir, item, plan.job)
            if record is not None:
                yield item, record, True
                continue
            raise RuntimeError(f"the record of {item.label()} changed during the run")
        yield item, next(computed), False


def _coco_results(index: int, record: dict[str, Any]) -> list[dict[str, Any]]:
    image_id = record.get("coco_image_id", index + 1)
    return [{"image_id": image_id, "category_id": o.get("category_id", 1),
             "segmentation": o["rle"], "bbox": o["bbox"] or [0, 0, 0, 0],
             "area": o["area_px"], "score": finite_or_none(o["score"] or 0.0)}
            for o in record.get("objects", [])]


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # optional: no bar without tqdm
        return None
    return tqdm(total=total, unit="img", desc="ultrasam predict", leave=False)


def run_batch(plan: BatchPlan, engine: EngineSpec | None = None,
              on_record: OnRecord | None = None, progress: bool = False) -> Summary:
    """Run the items that are not done and write the results files (see the module docstring).

    ``on_record(record, resumed)`` is called for every item in order. The output folder is
    created only once work starts; when the run stops before any item (the model cannot be
    loaded), nothing it started to write is left behind.

    Raises:
        the loader's error (e.g. ``CheckpointError``) when the model cannot be loaded.
    """
    engine = engine or EngineSpec()
    out = plan.out_dir
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp_jsonl, tmp_coco = out / f".{RESULTS_JSONL}.tmp", out / f".{RESULTS_COCO}.tmp"
    summary = Summary(total=len(plan.items), out_dir=out)
    volumes: dict[str, VolumeLabels] = {}
    bar = _progress(len(plan.items), progress)
    finished = False
    try:
        with open(tmp_jsonl, "w", encoding="utf-8") as fj, \
                open(tmp_coco, "w", encoding="utf-8") as fc:
            fc.write("[")
            first = True
            for item, record, resumed in _records(plan, engine):
                line = {"index": item.index,
                        "image_id": record.get("coco_image_id", item.index + 1), **record}
                fj.write(dumps_json(line) + "\n")
                for result in _coco_results(item.index, record):
                    fc.write(("\n" if first else ",\n") + dumps_json(result))
                    first = False
                if record["status"] != "ok":
                    summary.failed += 1
                elif resumed:
                    summary.resumed += 1
                else:
                    summary.ok += 1
                if plan.nifti_labels:
                    add_record(volumes, record)
                if on_record is not None:
                    on_record(record, resumed)
                if bar is not None:
                    bar.update(1)
            fc.write("\n]\n")
        os.replace(tmp_jsonl, out / RESULTS_JSONL)
        os.replace(tmp_coco, out / RESULTS_COCO)
        summary.results = [out / RESULTS_JSONL, out / RESULTS_COCO]
        finished = True
    finally:
        if bar is not None:
            bar.close()
        if not finished:
            remove_files([tmp_jsonl, tmp_coco], out)
            if created and not any(out.iterdir()):
                out.rmdir()
    for vol in volumes.values():
        summary.label_volumes.append(write_label_volume(vol, out))
    return summary


def predict_batch(inputs: list[str | Path], out_dir: str | Path, prompt: Prompt | None = None,
                  *, checkpoint: str | Path | None = None, format: str | None = None,
                  device: str = "cpu", frame: int | None = None, slice: int | None = None,
                  axis: int = 0, refine: bool = False, candidates: bool = False,
                  polygons: bool = False, overlay: bool = True, dicom_seg: bool = False,
                  nifti_labels: bool = False, coco_prompt: str = "box",
                  image_root: str | Path | None = None, overwrite: bool = False,
                  workers: int = 1, threads: int = 1, engine: str = "local",
                  scheduler: str | None = None, progress: bool = False,
                  on_record: OnRecord | None = None, backend: str = "torch") -> Summary:
    """Segment every image of ``inputs`` and write per-item files and results to ``out_dir``.

    ``inputs``: files, folders, globs, CSV/JSONL manifests or COCO files (see
    :mod:`ultrasam.inference.batch.inputs`); ``prompt`` applies to items without their own.
    ``workers`` processes (``engine="local"``) or Dask workers (``engine="dask"``, on the
    cluster at ``scheduler`` or a local one) each load the model once and use ``threads``
    intra-op threads. Bad items do not stop the run: see ``Summary.failed`` and
    ``results.jsonl``. ``backend="onnx"``: ``checkpoint`` is an ``ultrasam export onnx``
    folder, run on the CPU by ONNX Runtime without torch.
    """
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    if backend == "onnx":
        if not checkpoint:
            raise ValueError("--backend onnx needs --checkpoint DIR, a folder made by "
                             "`ultrasam export onnx`")
        if format is not None or device != "cpu":
            raise ValueError("--backend onnx runs the exported graphs on the CPU: drop "
                             "--format and --device")
        dev = "cpu"
    else:
        from ..device import resolve_device

        dev = resolve_device(device)
    spec = EngineSpec(kind=engine, workers=workers, threads=threads, address=scheduler)
    plan = plan_batch(
        inputs, out_dir, prompt=prompt, frame=frame, slice=slice, axis=axis,
        coco_prompt=coco_prompt, image_root=image_root,
        model=ModelSpec(str(checkpoint) if checkpoint else None, format, str(dev), backend,
                        threads if backend == "onnx" else None),
        options=ItemOptions(refine=refine, candidates=candidates, polygons=polygons,
                            overlay=overlay, dicom_seg=dicom_seg),
        nifti_labels=nifti_labels, overwrite=overwrite)
    return run_batch(plan, spec, on_record=on_record, progress=progress)
