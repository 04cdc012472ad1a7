"""Exports of the masks an image was given: PNG per object and frame (zip), COCO JSON, CSV.

Objects are what the page calls them: a name, a colour and the masks (one per frame at most)
the server answered for it. The RLE written to COCO is the server's answer verbatim.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ultrasam.data.coco import decode_rle

from .store import MaskRecord, StoredImage


@dataclass(frozen=True)
class ExportObject:
    name: str
    color: str
    masks: tuple[MaskRecord, ...]


def _frame_label(image: StoredImage, record: MaskRecord) -> str:
    if len(image.probe.axes) == 3:
        return f"axis{record.axis}_slice{record.frame:04d}"
    return f"frame{record.frame:04d}"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "object"


def to_coco(image: StoredImage, objects: list[ExportObject]) -> dict[str, Any]:
    """COCO instances: one image entry per (axis, frame) used, one category per object name,
    one annotation per object and frame with the RLE the API answered."""
    images: dict[tuple[int, int], dict[str, Any]] = {}
    categories: dict[str, int] = {}
    annotations = []
    for track, obj in enumerate(objects, start=1):
        cat = categories.setdefault(obj.name, len(categories) + 1)
        for r in obj.masks:
            key = (r.axis, r.frame)
            if key not in images:
                h, w = r.rle["size"]
                images[key] = {"id": len(images) + 1, "width": int(w), "height": int(h),
                               "file_name": f"{image.name}#{_frame_label(image, r)}",
                               "frame": r.frame, "axis": r.axis}
            rle = {"size": list(r.rle["size"]), "counts": r.rle["counts"]}
            bbox = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()})
            m = r.measurement
            annotations.append({
                "id": len(annotations) + 1, "image_id": images[key]["id"], "category_id": cat,
                "segmentation": rle, "area": m.area_px, "bbox": [float(v) for v in bbox],
                "iscrowd": 0, "track_id": track, "object": obj.name, "color": obj.color,
                "score": r.score, "area_mm2": m.area_mm2, "diameter_px": m.diameter_px,
                "diameter_mm": m.diameter_mm, "mask_id": r.mask_id})
    return {
        "info": {"description": f"ultrasam serve export of {image.name}",
                 "format": image.probe.format, "spacing_mm": image.spacing_mm},
        "images": sorted(images.values(), key=lambda d: d["id"]),
        "categories": [{"id": i, "name": n} for n, i in categories.items()],
        "annotations": annotations,
    }


def to_coco_bytes(image: StoredImage, objects: list[ExportObject]) -> bytes:
    return (json.dumps(to_coco(image, objects), indent=1) + "\n").encode("utf-8")


CSV_COLUMNS = ("object", "color", "axis", "frame", "area_px", "area_mm2", "diameter_px",
               "diameter_mm", "calibrated", "score", "note", "mask_id")


def _cell(value: Any) -> Any:
    # Spreadsheets run cells starting with = + - @ as formulas: quote user text that does.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def to_csv_bytes(image: StoredImage, objects: list[ExportObject]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for obj in objects:
        for r in obj.masks:
            m = r.measurement
            writer.writerow([_cell(v) for v in (
                obj.name, obj.color, r.axis, r.frame, m.area_px,
                None if m.area_mm2 is None else round(m.area_mm2, 4),
                round(m.diameter_px, 3),
                None if m.diameter_mm is None else round(m.diameter_mm, 4),
                m.calibrated, round(r.score, 4), m.note, r.mask_id)])
    return out.getvalue().encode("utf-8")


def to_png_zip(image: StoredImage, objects: list[ExportObject]) -> bytes:
    """A zip of ``<object>_<frame>.png``: 8-bit masks (255 inside) at the frame's size."""
    buf = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, obj in enumerate(objects, start=1):
            for r in obj.masks:
                stem = f"{safe_name(obj.name)}_{_frame_label(image, r)}"
                name = f"{stem}.png" if f"{stem}.png" not in used else f"{stem}_{i}.png"
                used.add(name)
                mask = decode_rle(r.rle).astype(np.uint8) * 255
                ok, png = cv2.imencode(".png", mask)
                if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
                    raise RuntimeError("PNG encoding failed")
                zf.writestr(name, png.tobytes())
    return buf.getvalue()
