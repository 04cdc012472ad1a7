"""Rasterisation and label-splitting helpers shared by the dataset converters.

Annotations arrive as vectors (point lists, LabelMe JSON shapes, COCO polygon segmentations) or
as label maps whose pixel values encode classes. These helpers turn both into what
:meth:`~ultrasam.data.coco.CocoWriter.add_image` takes: one ``H x W`` bool mask per structure.

Conventions:

* Points are ``(x, y)`` in pixel coordinates of the image (x = column, y = row), as in LabelMe
  and COCO. Polygons are filled with OpenCV's ``fillPoly`` (even-odd rule is not used: a
  self-crossing outline fills its whole interior), after rounding to the nearest pixel.
* Functions return what they could not use (unknown labels, unsupported shapes, unexpected
  label values) so that the converter can ``writer.warn`` with the file name; only
  :func:`add_labelled_slices`, which is handed the writer, warns itself.
* Bytes-level decoders exist because members of archives have no path on disk: they apply the
  same rules as :mod:`._read` (``read_image`` / ``read_mask``) to in-memory bytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ._read import decode_array, image_from_array, mask_from_array

__all__ = [
    "points_to_polygon", "polygon_mask", "fill_holes", "coco_segmentation_mask",
    "LabelMeResult", "labelme_masks", "load_json_bytes", "split_label_values",
    "binary_mask_values", "format_unknown", "decode_image_bytes", "decode_mask_bytes",
    "first_int", "add_labelled_slices",
]


# -- vectors -> masks --------------------------------------------------------------------------
def points_to_polygon(points: Iterable[Sequence[float]] | np.ndarray) -> np.ndarray:
    """A point list ``[[x, y], ...]`` (or a flat ``[x0, y0, x1, y1, ...]``) as ``N x 2`` int32.

    Coordinates are rounded to the nearest pixel. Raises ``ValueError`` for an odd-length flat
    list, non-numeric values, or points that are not pairs.
    """
    try:
        arr = np.asarray(list(points) if not isinstance(points, np.ndarray) else points,
                         dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"polygon points are not numeric: {e}") from e
    if arr.ndim == 1:
        if arr.size % 2:
            raise ValueError(f"flat polygon has an odd number of coordinates ({arr.size})")
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"polygon points must be N x 2 (x, y), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("polygon has non-finite coordinates")
    return np.round(arr).astype(np.int32)


def polygon_mask(polygons: Iterable[Iterable[Sequence[float]] | np.ndarray],
                 shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool: the union of the filled ``polygons`` (each ``N x 2`` xy, N >= 3).

    ``shape`` = (height, width). Polygons with fewer than 3 points raise ``ValueError``: they
    enclose no area, and silently drawing a line would invent one.
    """
    h, w = shape
    canvas = np.zeros((h, w), np.uint8)
    pts = [points_to_polygon(p) for p in polygons]
    for p in pts:
        if len(p) < 3:
            raise ValueError(f"polygon with {len(p)} point(s) encloses no area")
    # One fillPoly call per polygon: a single call with several polygons applies the even-odd
    # rule and would empty their overlap instead of taking the union.
    for p in pts:
        cv2.fillPoly(canvas, [p.reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``H x W`` bool with every region enclosed by ``mask`` filled (contour-only labels).

    A closed outline becomes its filled interior; open curves stay as they are. Background is
    what is 4-connected to the image border, so diagonal gaps in an 8-connected outline do not
    leak.
    """
    if mask.ndim != 2:
        raise ValueError(f"fill_holes expects an H x W mask, got shape {mask.shape}")
    m = mask.astype(bool)
    # Pad by one pixel so that the border is background and one flood fill reaches all of it.
    padded = np.pad(~m, 1, constant_values=True).astype(np.uint8)
    flood = padded.copy()
    ff_mask = np.zeros((flood.shape[0] + 2, flood.shape[1] + 2), np.uint8)
    cv2.floodFill(flood, ff_mask, (0, 0), 2, flags=4)
    outside = flood[1:-1, 1:-1] == 2
    return ~outside


def coco_segmentation_mask(segmentation: Any, shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool from a COCO ``segmentation``: polygon list or (un)compressed RLE.

    Polygons are ``[[x0, y0, x1, y1, ...], ...]``; an RLE is ``{"size": [h, w], "counts": ...}``
    and must match ``shape``. Raises ``ValueError`` for anything else.
    """
    h, w = shape
    if isinstance(segmentation, dict):
        from ..coco import decode_rle

        size = segmentation.get("size")
        if size is None or "counts" not in segmentation:
            raise ValueError("RLE segmentation lacks 'size' or 'counts'")
        if [int(v) for v in size] != [h, w]:
            raise ValueError(f"RLE size {size} differs from image size {[h, w]}")
        return decode_rle(segmentation)
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("empty polygon list")
        if all(isinstance(v, (int, float)) for v in segmentation):
            segmentation = [segmentation]  # a single flat polygon, not wrapped in a list
        return polygon_mask(segmentation, shape)
    raise ValueError(f"unsupported segmentation type {type(segmentation).__name__}")


# -- LabelMe ------------------------------------------------------------------------------------
@dataclass
class LabelMeResult:
    """What :func:`labelme_masks` made of one LabelMe file.

    ``masks``: structure -> ``H x W`` bool (only structures with at least one shape).
    ``unknown_labels``: label strings not in the label map (sorted, unique).
    ``skipped``: human-readable reasons for shapes that could not be rasterised.
    """

    masks: dict[str, np.ndarray] = field(default_factory=dict)
    unknown_labels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _labelme_shape_mask(shape: Mapping[str, Any], size: tuple[int, int]) -> np.ndarray:
    kind = str(shape.get("shape_type") or "polygon").lower()
    pts = points_to_polygon(shape.get("points") or [])
    h, w = size
    if kind == "polygon":
        return polygon_mask([pts], size)
    if kind == "rectangle":
        if len(pts) != 2:
            raise ValueError(f"rectangle with {len(pts)} points")
        canvas = np.zeros((h, w), np.uint8)
        cv2.rectangle(canvas, tuple(int(v) for v in pts[0]), tuple(int(v) for v in pts[1]), 1, -1)
        return canvas.astype(bool)
    if kind == "circle":
        if len(pts) != 2:
            raise ValueError(f"circle with {len(pts)} points")
        # LabelMe stores the centre then a point on the circumference.
        radius = int(round(float(np.hypot(*(pts[1] - pts[0]).astype(float)))))
        canvas = np.zeros((h, w), np.uint8)
        cv2.circle(canvas, (int(pts[0][0]), int(pts[0][1])), radius, 1, -1)
        return canvas.astype(bool)
    raise ValueError(f"shape type {kind!r} encloses no area")


def labelme_masks(data: Mapping[str, Any], shape: tuple[int, int],
                  label_map: Mapping[str, str]) -> LabelMeResult:
    """Rasterise a parsed LabelMe document into one mask per structure.

    ``shape`` = (height, width) of the image actually read (LabelMe's ``imageHeight`` /
    ``imageWidth`` may disagree; the caller checks). ``label_map``: LabelMe label (matched after
    stripping whitespace, case-insensitive) -> structure name. Shapes of the same structure are
    united. Raises ``ValueError`` when ``data`` has no ``shapes`` list.
    """
    shapes = data.get("shapes") if isinstance(data, Mapping) else None
    if not isinstance(shapes, list):
        raise ValueError("not a LabelMe document: no 'shapes' list")
    lookup = {k.strip().lower(): v for k, v in label_map.items()}
    result = LabelMeResult()
    unknown: set[str] = set()
    for i, shp in enumerate(shapes):
        if not isinstance(shp, Mapping):
            result.skipped.append(f"shape {i} is not an object")
            continue
        label = str(shp.get("label", "")).strip()
        structure = lookup.get(label.lower())
        if structure is None:
            unknown.add(label)
            continue
        try:
            m = _labelme_shape_mask(shp, shape)
        except ValueError as e:
            result.skipped.append(f"shape {i} ({label}): {e}")
            continue
        prev = result.masks.get(structure)
        result.masks[structure] = m if prev is None else (prev | m)
    result.unknown_labels = sorted(unknown)
    return result


def load_json_bytes(data: bytes) -> Any:
    """Parse JSON bytes written by annotation tools: UTF-8 (with or without BOM), else GB18030.

    Chinese LabelMe exports are sometimes saved in the local code page. Raises ``ValueError``
    (a ``json.JSONDecodeError`` or a decoding error) when no encoding yields valid JSON.
    """
    last: Exception | None = None
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return json.loads(data.decode(encoding))
        except UnicodeDecodeError as e:
            last = e
        except json.JSONDecodeError as e:
            raise ValueError(f"malformed JSON: {e}") from e
    raise ValueError(f"undecodable JSON text: {last}")


# -- label maps -> masks ------------------------------------------------------------------------
def split_label_values(label: np.ndarray, value_map: Mapping[int, str]
                       ) -> tuple[dict[str, np.ndarray], dict[int, int]]:
    """Split an ``H x W`` integer label map into one bool mask per structure.

    ``value_map``: pixel value -> structure (several values may share a structure, e.g. left
    and right carotid). Returns ``(masks, unknown)``: masks only for structures present, and
    ``unknown`` = {value: pixel count} for non-zero values absent from ``value_map`` (the caller
    warns; those pixels are not assigned to any structure).
    """
    if label.ndim != 2:
        raise ValueError(f"label map must be H x W, got shape {label.shape}")
    values, counts = np.unique(label, return_counts=True)
    masks: dict[str, np.ndarray] = {}
    unknown: dict[int, int] = {}
    for v, n in zip(values.tolist(), counts.tolist()):
        if v == 0:
            continue
        key = int(v) if float(v).is_integer() else v
        structure = value_map.get(key) if isinstance(key, int) else None
        if structure is None:
            unknown[key] = int(n)
            continue
        m = label == v
        masks[structure] = m if structure not in masks else (masks[structure] | m)
    return masks, unknown


def binary_mask_values(mask: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Foreground of a binary mask stored as 0/1 *or* 0/255 (``H x W``, or colour collapsed).

    Both 1 and 255 count as foreground (some releases mix the two conventions; keeping only
    pixels equal to 1 silently drops every 0/255 mask). Returns ``(foreground, unknown)`` with
    ``unknown`` = {value: pixel count} for other non-zero values, which are not foreground.
    """
    m = mask if mask.ndim == 2 else mask[..., :3].max(axis=2)
    if m.dtype == bool:
        return m.copy(), {}
    masks, unknown = split_label_values(m, {1: "fg", 255: "fg"})
    fg = masks.get("fg", np.zeros(m.shape, bool))
    return fg, unknown


def format_unknown(unknown: Mapping[Any, int]) -> str:
    """``"values 3 (12 px), 7 (4 px)"`` for a warning message."""
    return "values " + ", ".join(f"{v} ({n} px)" for v, n in sorted(unknown.items(),
                                                                    key=lambda kv: str(kv[0])))


# -- bytes -> arrays ----------------------------------------------------------------------------
def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes -> ``H x W`` or ``H x W x 3`` uint8, as ``_read.read_image`` does.

    ``name`` is only used in the :class:`UnreadableFile` raised for undecodable data.
    """
    return image_from_array(decode_array(io.BytesIO(data), name, palette_as_rgb=True), name)


def decode_mask_bytes(data: bytes, name: str) -> np.ndarray:
    """Encoded mask bytes -> stored values (palette indices, not colours), as ``read_mask``."""
    return mask_from_array(decode_array(io.BytesIO(data), name), name)


def first_int(text: str) -> int | None:
    """The first run of digits in ``text`` as an int (``"microUS_train_07"`` -> 7), or None."""
    digits = ""
    for ch in text:
        if ch.isdigit():
            digits += ch
        elif digits:
            break
    return int(digits) if digits else None


# -- label volumes -> per-slice images ------------------------------------------------------------
def add_labelled_slices(writer: Any, image: np.ndarray, label: np.ndarray,
                        value_map: Mapping[int, str], *, source: str, label_source: str,
                        group: str | None, split: str | None = None, axis: str = "slice",
                        name_parts: tuple[str, ...] = (), label_name: str | None = None,
                        extra: dict[str, Any] | None = None) -> int:
    """Add every slice (or frame) of a labelled volume that holds at least one known label.

    ``image``: ``S x H x W`` (or ``S x H x W x 3``) uint8, already in one intensity mapping for
    the whole volume. ``label``: ``S x H x W`` integer label map, slice ``i`` of it annotating
    slice ``i`` of ``image`` (the first array axis, as UltraSam slices volumes and videos).
    ``axis``: ``"slice"`` (volumes: the index goes to ``slice``) or ``"frame"`` (videos).
    Slices whose label is empty are not added: for sweeps and cine loops an empty label means
    "not annotated", not "nothing there". Unknown label values are summed over the volume and
    reported in one ``writer.warn`` naming ``label_source``. A shape mismatch is warned about and
    nothing is added. Returns the number of images added.
    """
    if axis not in ("slice", "frame"):
        raise ValueError(f"axis must be 'slice' or 'frame', got {axis!r}")
    if image.shape[:3] != label.shape[:3] or label.ndim != 3:
        writer.warn(label_source, f"label shape {label.shape} does not match image shape "
                                  f"{image.shape}; volume skipped")
        return 0
    unknown: dict[int, int] = {}
    added = 0
    for i in range(label.shape[0]):
        plane = label[i]
        if not plane.any():
            continue
        masks, bad = split_label_values(plane, value_map)
        for v, n in bad.items():
            unknown[v] = unknown.get(v, 0) + n
        if not masks:
            continue
        index = {"slice_index": i} if axis == "slice" else {"frame": i}
        writer.add_image(np.ascontiguousarray(image[i]), masks, source=source, group=group,
                         split=split, label=label_name, name_parts=name_parts, extra=extra,
                         **index)
        added += 1
    if unknown:
        writer.warn(label_source, f"unknown label {format_unknown(unknown)} ignored; expected "
                                  f"{sorted(value_map)}")
    return added
