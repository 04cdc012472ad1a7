"""Segment image files from prompts and write masks, overlays and JSON (``ultrasam predict``)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .data.coco import encode_rle

log = logging.getLogger(__name__)


@dataclass
class Prompt:
    """Prompts in original-image pixels: points N x 2 xy with labels N (1 fg / 0 bg), box XYXY."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None


def parse_point(text: str) -> tuple[float, float, int]:
    """"X,Y" or "X,Y,LABEL" (LABEL 1 foreground, 0 background) -> (x, y, label)."""
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise ValueError(f"--point expects X,Y or X,Y,LABEL, got {text!r}")
    try:
        x, y = float(parts[0]), float(parts[1])
        label = int(parts[2]) if len(parts) == 3 else 1
    except ValueError as e:
        raise ValueError(f"--point {text!r}: {e}") from e
    if label not in (0, 1):
        raise ValueError(f"--point {text!r}: label must be 1 (foreground) or 0 (background)")
    return x, y, label


def parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"--box expects X0,Y0,X1,Y1, got {text!r}")
    try:
        x0, y0, x1, y1 = (float(p) for p in parts)
    except ValueError as e:
        raise ValueError(f"--box {text!r}: {e}") from e
    return x0, y0, x1, y1


def overlay(rgb: np.ndarray, mask: np.ndarray, prompt: Prompt) -> np.ndarray:
    """H x W x 3 uint8 with the mask tinted, its contour drawn and the prompts marked."""
    out = rgb.astype(np.float32)
    tint = np.array([255, 64, 32], np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * tint
    out = out.clip(0, 255).astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    thick = max(1, round(max(rgb.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (255, 255, 0), thick)
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thick)
    for (x, y), lab in zip(prompt.points, prompt.labels):
        colour = (0, 255, 0) if lab == 1 else (255, 0, 0)
        cv2.circle(out, (int(round(x)), int(round(y))), 2 + 2 * thick, colour, -1)
    return out


def _write_png(path: Path, rgb_or_grey: np.ndarray) -> None:
    img = rgb_or_grey if rgb_or_grey.ndim == 2 else cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def predict_files(images: list[str | Path], out_dir: str | Path, prompt: Prompt,
                  checkpoint: str | Path | None = None, format: str | None = None,
                  frame: int | None = None, slice: int | None = None, axis: int = 0,
                  refine: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Segment each image with the same prompt; write ``<stem>.mask.png``, ``.overlay.png``
    and ``.json`` to ``out_dir``. Returns the JSON records.

    Without ``refine`` the multimask output with the highest predicted IoU is kept (one
    positive point is ambiguous), except when several points or a box make the prompt
    specific, where the single-mask output is used, as SAM recommends.
    """
    from .checkpoints import load_model
    from .predictor import Predictor

    if prompt.is_empty():
        raise ValueError("give at least one --point or a --box")
    model = load_model(checkpoint, device=device, format=format)
    predictor = Predictor(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for image in images:
        path = Path(image)
        predictor.set_image(path, frame=frame, slice=slice, axis=axis)
        assert predictor.original_size is not None
        multimask = len(prompt.points) == 1 and prompt.box is None
        masks, scores, _ = predictor.predict(
            point_coords=np.array(prompt.points, float) if prompt.points else None,
            point_labels=np.array(prompt.labels) if prompt.points else None,
            box=np.array(prompt.box, float) if prompt.box is not None else None,
            multimask_output=multimask and not refine, refine=refine)
        best = int(np.argmax(scores))
        mask = masks[best]
        warnings = list(predictor.image_warnings)
        area_px = int(mask.sum())
        area_mm2, area_warnings = _area_mm2(mask, predictor.spacing_mm,
                                            predictor.image_meta.get("calibration"))
        warnings += [w for w in area_warnings if w not in warnings]
        stem = _output_stem(path, frame, slice)
        rgb = predictor.image_rgb
        assert rgb is not None
        _write_png(out / f"{stem}.mask.png", mask.astype(np.uint8) * 255)
        _write_png(out / f"{stem}.overlay.png", overlay(rgb, mask, prompt))
        record = {
            "image": str(path), "frame": frame, "slice": slice,
            "size": list(predictor.original_size),
            "checkpoint": str(checkpoint) if checkpoint else "default",
            "prompt": {"points": prompt.points, "labels": prompt.labels, "box": prompt.box},
            "refine": refine, "scores": [float(s) for s in scores], "selected": best,
            "rle": encode_rle(mask), "area_px": area_px, "area_mm2": area_mm2,
            "spacing_mm": list(predictor.spacing_mm) if predictor.spacing_mm else None,
            "warnings": warnings,
        }
        (out / f"{stem}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        log.info("%s: mask of %d px (score %.3f) -> %s", path.name, area_px, scores[best], out)
        records.append(record)
    return records


def _area_mm2(mask: np.ndarray, spacing: tuple[float, float] | None,
              calibration: Any) -> tuple[float | None, list[str]]:
    """Mask area in mm^2: DICOM ultrasound regions decide per mask (the mask must lie inside one
    calibrated region); otherwise the image's spacing, when it has one."""
    if calibration is not None:
        from .io.dicom import mask_area_mm2

        return mask_area_mm2(mask, calibration)
    if spacing is not None:
        return float(mask.sum()) * spacing[0] * spacing[1], []
    return None, []


def _output_stem(path: Path, frame: int | None, slice: int | None) -> str:
    """``<stem>``, or ``<stem>.frameK`` / ``<stem>.sliceK`` so frames do not overwrite."""
    name = path.name
    for ext in (".nii.gz", ".dcm", ".nii"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = path.stem
    if frame is not None:
        return f"{name}.frame{frame}"
    if slice is not None:
        return f"{name}.slice{slice}"
    return name
