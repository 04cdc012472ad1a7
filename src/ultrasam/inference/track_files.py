"""Track objects through a cine, volume, video or folder of frames and write the results
(``ultrasam track``).

Files written to the output folder:

* ``masks/<name>/frame_00012.png`` (0/255) per tracked frame and object; for volume inputs one
  ``labels.nii.gz`` instead (object i has label i + 1, in prompt order; where objects overlap the
  later one wins), on the input's voxel grid (its affine for NIfTI; spacing, origin and
  direction for MetaImage).
* ``annotations.json``: COCO, one image per frame, one annotation per tracked non-empty
  (object, frame) with RLE, bbox, area, ``score`` and ``flags``.
* ``measurements.csv``: one row per tracked (object, frame); columns :data:`CSV_COLUMNS`.
  Empty cells mean "not available" (no timing, no calibration).
* ``area.png``: area over time per object, flagged frames marked (needs matplotlib; skipped with
  a warning without it).
* ``summary.json``: per object min / max / mean area, fractional area change
  ``(max - min) / max``, flagged and untracked frames; timing, calibration and speed.
* ``overlays/frame_00012.png`` with ``overlays=True``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ultrasam.inference.measure import MaskMeasurement, measure_mask, series_summary
from ultrasam.inference.tracking import FrameResult, Tracker, TrackerConfig
from ultrasam.io.video import FrameSequence, open_frames

log = logging.getLogger(__name__)

CSV_COLUMNS = ("name", "frame", "time_s", "position_mm", "area_px", "area_mm2",
               "max_diameter_px", "max_diameter_mm", "centroid_x_px", "centroid_y_px", "score",
               "area_change", "prompted", "flagged", "flags")
_COLOURS = ((255, 64, 32), (32, 160, 255), (64, 220, 64), (255, 200, 0), (200, 64, 255),
            (0, 220, 200))


@dataclass
class PromptSpec:
    """One prompt: frame, points N x 2 xy with labels (1/0), optional XYXY box (pixels)."""

    frame: int
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None


@dataclass
class ObjectSpec:
    """A named object and its prompts."""

    name: str
    prompts: list[PromptSpec] = field(default_factory=list)


def track_file(input_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
               objects: list[ObjectSpec], checkpoint: str | os.PathLike[str] | None = None,
               format: str | None = None, device: str = "cpu",
               frame_range: tuple[int | None, int | None] | None = None, axis: int = 0,
               fps: float | None = None, spacing_mm: tuple[float, float] | None = None,
               config: TrackerConfig | None = None, overlays: bool = False,
               model: Any = None) -> dict[str, Any]:
    """Track ``objects`` through the frames of ``input_path``; write the files listed in the
    module docstring to ``out_dir`` and return the summary.

    ``frame_range``: ``(start, stop)`` half-open, ``None`` ends meaning the sequence's ends.
    ``model``: an already loaded model (then ``checkpoint``/``format``/``device`` are unused).
    """
    from ultrasam.inference.predictor import Predictor
    from ultrasam.weights.checkpoints import load_model

    _check_objects(objects)
    frames = open_frames(input_path, axis=axis, fps=fps, spacing_mm=spacing_mm)
    start, stop = _resolve_range(frame_range, len(frames))
    if model is None:
        model = load_model(checkpoint, device=device, format=format)
    tracker = Tracker(Predictor(model), frames, config=config, frame_range=(start, stop))
    t0 = time.perf_counter()
    for obj in objects:
        for p in obj.prompts:
            tracker.add_prompt(p.frame, points=p.points or None,
                               labels=p.labels or None, box=p.box, name=obj.name)
    tracker.propagate()
    elapsed = time.perf_counter() - t0
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [o.name for o in objects]
    results = {name: tracker.results(name) for name in names}
    measurements = {name: [measure_mask(r.mask, frames.spacing_mm, frames.calibration)
                           for r in rs] for name, rs in results.items()}
    if frames.kind == "volume":
        _write_label_volume(out / "labels.nii.gz", frames, results)
    else:
        _write_mask_pngs(out / "masks", results)
    _write_coco(out / "annotations.json", frames, results, (start, stop), input_path)
    rows = _csv_rows(frames, results, measurements)
    _write_csv(out / "measurements.csv", rows)
    plot = _plot_areas(out / "area.png", rows, names)
    if overlays:
        _write_overlays(out / "overlays", frames, results, (start, stop))
    summary = _summary(input_path, frames, (start, stop), tracker, results, measurements,
                       checkpoint, elapsed, plot)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    n_done = sum(len(r) for r in results.values())
    log.info("tracked %d object(s) over frames %d..%d (%d results) in %.1f s -> %s",
             len(names), start, stop - 1, n_done, elapsed, out)
    return summary


def _check_objects(objects: list[ObjectSpec]) -> None:
    if not objects:
        raise ValueError("give at least one object with a prompt (--frame K with --box or "
                         "--point)")
    seen = set()
    for obj in objects:
        if obj.name in seen:
            raise ValueError(f"object name {obj.name!r} is used twice")
        seen.add(obj.name)
        if not obj.prompts:
            raise ValueError(f"object {obj.name!r} has no prompt (--frame K with --box or "
                             "--point)")
        for p in obj.prompts:
            if not p.points and p.box is None:
                raise ValueError(f"object {obj.name!r}: the prompt on frame {p.frame} needs "
                                 "--box or --point")


def _resolve_range(frame_range: tuple[int | None, int | None] | None, n: int
                   ) -> tuple[int, int]:
    if frame_range is None:
        return 0, n
    a, b = frame_range
    start = 0 if a is None else (a + n if a < 0 else a)
    stop = n if b is None else (b + n if b < 0 else b)
    if not 0 <= start < stop <= n:
        raise ValueError(f"range {a}:{b} selects no frames of a {n}-frame sequence (frames "
                         f"0..{n - 1}; the range is half-open, A:B = A..B-1)")
    return start, stop


def _frame_stem(k: int) -> str:
    return f"frame_{k:05d}"


def _write_png(path: Path, image: np.ndarray) -> None:
    img = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def _write_mask_pngs(folder: Path, results: dict[str, list[FrameResult]]) -> None:
    used: set[str] = set()
    for name, rs in results.items():
        safe = base = _safe_name(name)
        while safe in used:  # "a b" and "a_b" must not share a folder
            safe = f"{base}_{len(used)}"
        used.add(safe)
        sub = folder / safe
        sub.mkdir(parents=True, exist_ok=True)
        for r in rs:
            _write_png(sub / f"{_frame_stem(r.frame)}.png", r.mask.astype(np.uint8) * 255)


def _safe_name(name: str) -> str:
    """A folder name for an object: letters, digits, ``-`` and ``_`` kept, the rest ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "object"


def _write_label_volume(path: Path, frames: FrameSequence,
                        results: dict[str, list[FrameResult]]) -> None:
    """Labels on the input volume's grid: frames were slices along ``axis`` (ITK order)."""
    from ultrasam.io.volumes import require_nibabel

    nib = require_nibabel()
    axis = int(frames.meta["axis"])
    dtype = np.uint8 if len(results) < 256 else np.uint16
    itk = np.zeros(frames.meta["volume_shape_itk"], dtype=dtype)
    for label, rs in enumerate(results.values(), start=1):
        for r in rs:
            plane = [slice(None)] * 3
            plane[axis] = r.frame  # type: ignore[call-overload]
            view = itk[tuple(plane)]
            view[r.mask] = label
    data = itk.transpose(2, 1, 0)  # ITK (z, y, x) -> NIfTI (x, y, z)
    if "affine" in frames.meta:
        img = nib.Nifti1Image(data, frames.meta["affine"])
        img.header.set_xyzt_units(*frames.meta["header"].get_xyzt_units())
    else:
        img = nib.Nifti1Image(data, _metaimage_affine(frames.meta["metaimage_fields"]))
        img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _metaimage_affine(fields: dict[str, str]) -> np.ndarray:
    """NIfTI (RAS) affine of a MetaImage grid: ITK's LPS point = origin + D diag(s) index."""
    def numbers(key: str, default: list[float]) -> list[float]:
        text = fields.get(key)
        return [float(v) for v in text.split()] if text else default

    nd = int(fields.get("NDims", "3"))
    spacing = (numbers("ElementSpacing", numbers("ElementSize", [1.0] * nd)) + [1.0] * 3)[:3]
    origin = (numbers("Offset", numbers("Origin", numbers("Position", [0.0] * nd)))
              + [0.0] * 3)[:3]
    direction = np.eye(3)
    matrix = numbers("TransformMatrix", numbers("Orientation", numbers("Rotation", [])))
    if len(matrix) == nd * nd:
        direction[:nd, :nd] = np.array(matrix).reshape(nd, nd).T  # row-major cosines, by column
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _encode(mask: np.ndarray) -> tuple[dict[str, Any], list[float]]:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, bbox


def _write_coco(path: Path, frames: FrameSequence, results: dict[str, list[FrameResult]],
                frame_range: tuple[int, int], source: str | os.PathLike[str]) -> None:
    h, w = frames.size
    files = frames.meta.get("files")
    images = []
    for k in range(*frame_range):
        name = files[k] if files else f"{Path(source).name}#frame={k}"
        t = None if frames.times_s is None else float(frames.times_s[k])
        images.append({"id": k + 1, "file_name": name, "width": w, "height": h, "frame": k,
                       "time_s": t})
    categories = [{"id": i, "name": name} for i, name in enumerate(results, start=1)]
    annotations = []
    for cat, rs in enumerate(results.values(), start=1):
        for r in rs:
            if r.area_px == 0:
                continue
            rle, bbox = _encode(r.mask)
            annotations.append({"id": len(annotations) + 1, "image_id": r.frame + 1,
                                "category_id": cat, "segmentation": rle, "bbox": bbox,
                                "area": r.area_px, "iscrowd": 0, "score": r.score,
                                "flags": list(r.flags), "prompted": r.prompted})
    doc = {"info": {"description": f"ultrasam track of {Path(source).name}"},
           "images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(doc) + "\n", encoding="utf-8")


def _csv_rows(frames: FrameSequence, results: dict[str, list[FrameResult]],
              measurements: dict[str, list[MaskMeasurement]]) -> list[dict[str, Any]]:
    rows = []
    for name, rs in results.items():
        for r, m in zip(rs, measurements[name]):
            rows.append({
                "name": name, "frame": r.frame,
                "time_s": None if frames.times_s is None else float(frames.times_s[r.frame]),
                "position_mm": (None if frames.positions_mm is None
                                else float(frames.positions_mm[r.frame])),
                "area_px": m.area_px, "area_mm2": m.area_mm2,
                "max_diameter_px": m.max_diameter_px, "max_diameter_mm": m.max_diameter_mm,
                "centroid_x_px": m.centroid_x_px, "centroid_y_px": m.centroid_y_px,
                "score": r.score, "area_change": r.area_change, "prompted": int(r.prompted),
                "flagged": int(r.flagged), "flags": ";".join(r.flags)})
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    def cell(v: Any) -> Any:
        if v is None:
            return ""
        return f"{v:.6g}" if isinstance(v, float) else v

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: cell(row[k]) for k in CSV_COLUMNS})


def _plot_areas(path: Path, rows: list[dict[str, Any]], names: list[str]) -> str | None:
    """Area over time per object; returns the file name, or None (with a warning) without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: area plot skipped (pip install "
                    "ultrasam[plots])")
        return None
    use_mm = bool(rows) and all(r["area_mm2"] is not None for r in rows)
    use_time = bool(rows) and all(r["time_s"] is not None for r in rows)
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for name in names:
        own = [r for r in rows if r["name"] == name]
        x = [r["time_s"] if use_time else r["frame"] for r in own]
        y = [r["area_mm2"] if use_mm else r["area_px"] for r in own]
        (line,) = ax.plot(x, y, marker=".", label=name)
        bad = [(xi, yi) for xi, yi, r in zip(x, y, own) if r["flagged"]]
        if bad:
            ax.scatter(*zip(*bad), marker="x", color="red", zorder=3)
        ax.scatter([xi for xi, r in zip(x, own) if r["prompted"]],
                   [yi for yi, r in zip(y, own) if r["prompted"]], marker="v", s=60,
                   color=line.get_color(), zorder=3)
    ax.set_xlabel("time (s)" if use_time else "frame")
    ax.set_ylabel("area (mm²)" if use_mm else "area (px)")
    ax.set_title("area over time (v prompted, x flagged)")
    if len(names) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def overlay_frame(rgb: np.ndarray, masks: list[np.ndarray]) -> np.ndarray:
    """H x W x 3 uint8: each mask tinted in its own colour with its contour drawn."""
    out = rgb.astype(np.float32)
    thick = max(1, round(max(rgb.shape[:2]) / 300))
    for i, mask in enumerate(masks):
        out[mask] = 0.6 * out[mask] + 0.4 * np.array(_COLOURS[i % len(_COLOURS)], np.float32)
    img = out.clip(0, 255).astype(np.uint8)
    for i, mask in enumerate(masks):
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, _COLOURS[i % len(_COLOURS)], thick)
    return img


def _write_overlays(folder: Path, frames: FrameSequence,
                    results: dict[str, list[FrameResult]], frame_range: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    by_frame = [{r.frame: r.mask for r in rs} for rs in results.values()]
    h, w = frames.size
    for k in range(*frame_range):
        masks = [own.get(k, np.zeros((h, w), bool)) for own in by_frame]
        _write_png(folder / f"{_frame_stem(k)}.png", overlay_frame(frames[k], masks))


def _summary(source: str | os.PathLike[str], frames: FrameSequence,
             frame_range: tuple[int, int], tracker: Tracker,
             results: dict[str, list[FrameResult]],
             measurements: dict[str, list[MaskMeasurement]],
             checkpoint: str | os.PathLike[str] | None, elapsed: float,
             plot: str | None) -> dict[str, Any]:
    start, stop = frame_range
    objects = {}
    for name, rs in results.items():
        ms = measurements[name]
        tracked = {r.frame for r in rs}
        mm = [m.area_mm2 for m in ms]
        objects[name] = {
            "prompts": [{"frame": p.frame,
                         "points": None if p.points is None else p.points.tolist(),
                         "labels": None if p.labels is None else p.labels.tolist(),
                         "box": None if p.box is None else p.box.tolist()}
                        for p in tracker.prompts(name)],
            "frames_tracked": len(rs),
            "frames_flagged": [r.frame for r in rs if r.flagged],
            "frames_untracked": [k for k in range(start, stop) if k not in tracked],
            "area_px": series_summary([m.area_px for m in ms]),
            "area_mm2": series_summary(mm) if any(v is not None for v in mm) else None,
            "area_mm2_frames": sum(v is not None for v in mm),
            "max_diameter_px": series_summary([m.max_diameter_px for m in ms]),
            "max_diameter_mm": series_summary([m.max_diameter_mm for m in ms])
            if any(m.max_diameter_mm is not None for m in ms) else None,
            "mean_score": float(np.mean([r.score for r in rs])) if rs else None,
        }
    calibration = frames.calibration
    n_frames = stop - start
    return {
        "input": str(source), "kind": frames.kind, "n_frames": len(frames),
        "frame_range": [start, stop], "size_hw": list(frames.size),
        "timing": frames.meta.get("timing") or ("fps" if frames.times_s is not None else None),
        "frame_period_s": (float(np.mean(np.diff(frames.times_s)))
                           if frames.times_s is not None and len(frames) > 1 else None),
        "spacing_mm": list(frames.spacing_mm) if frames.spacing_mm else None,
        "calibration": getattr(calibration, "source", None) if calibration is not None
        else ("spacing" if frames.spacing_mm else None),
        "warnings": list(frames.warnings),
        "checkpoint": str(checkpoint) if checkpoint else "default",
        "config": asdict(tracker.config), "objects": objects,
        "speed": {"seconds": elapsed, "frames_per_second": n_frames / elapsed if elapsed else None,
                  "encoded": tracker.stats.encoded, "decoded": tracker.stats.decoded,
                  "encode_s": tracker.stats.encode_s, "decode_s": tracker.stats.decode_s},
        "files": {"masks": "labels.nii.gz" if frames.kind == "volume" else "masks/",
                  "coco": "annotations.json", "csv": "measurements.csv", "plot": plot},
    }
