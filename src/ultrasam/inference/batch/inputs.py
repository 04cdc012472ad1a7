"""Inputs of a batch -> items: files, folders (recursive), globs, manifests and COCO files.

* A **file** is one item; a **folder** is searched recursively for image files (known image
  suffixes, plus suffix-less files that start like DICOM, as hospital exports name them
  ``IM0001``); hidden files and the batch's own output folder are skipped.
* A **glob** (``scans/**/*.dcm``) is expanded (``**`` recursive); one that matches nothing is an
  error.
* A **manifest** (``.csv`` with a header row, or ``.jsonl`` with one object per line) has a
  ``path`` column (relative to the manifest's folder, or absolute), optional ``frame``,
  ``slice``, ``axis``, ``id``, and per-row prompts: ``points``, ``labels``, ``box``, ``mask``
  (see :func:`ultrasam.inference.batch.prompts.prompt_from_fields`). Rows naming the same image
  (same path, frame, slice and axis) are the objects of one item. A row with a bad value becomes
  an item that fails with that message; the other rows still run.
* A **COCO** file (``.json`` with ``images`` and ``annotations``): each image with annotations
  is an item whose objects are its annotations, prompted by their box (``coco_prompt="box"``)
  or by one foreground point inside the mask (``"point"``, see :func:`_inner_point`). Crowd
  annotations are skipped. ``file_name`` is relative to ``image_root`` (default: the JSON's
  folder, or its ``images/`` subfolder when the files are there, as in ``us-corpus``).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .items import CocoRef, Item
from .prompts import Prompt, prompt_from_fields

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm",
                  ".dicom", ".nii", ".nii.gz", ".mha", ".mhd")
MANIFEST_SUFFIXES = (".csv", ".jsonl")
_GLOB_MAGIC = ("*", "?", "[")
_MAX_MANIFEST_BYTES = 1 << 30  # a 1 GiB manifest is far beyond 100k rows; refuse runaway files
_EXTRA = "\0extra"  # marks a CSV row with surplus cells (never a real column name)
_MANIFEST_FIELDS = {"path", "frame", "slice", "axis", "id", "points", "labels", "box", "mask"}


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def scan_folder(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted, hidden entries and ``exclude`` skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not _inside(here / d, exclude))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            if _is_image_name(name) or ("." not in name and _looks_like_dicom(path)):
                found.append(path)
    return found


def _int_field(row: dict[str, Any], name: str, default: int | None) -> int | None:
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError as e:
        raise ValueError(f"{name} must be an integer, got {value!r}") from e


def _read_manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a CSV or JSONL manifest."""
    if path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ValueError(f"{path}: manifest larger than {_MAX_MANIFEST_BYTES >> 20} MiB")
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.suffix.lower() == ".csv":
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise ValueError(f"{path}: a CSV manifest needs a header row with a 'path' "
                                 f"column, got {reader.fieldnames}")
            unknown = set(reader.fieldnames) - _MANIFEST_FIELDS
            if unknown:
                raise ValueError(f"{path}: unknown manifest column(s) {sorted(unknown)}; "
                                 f"expected {sorted(_MANIFEST_FIELDS)}")
            for row in reader:
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:  # more cells than columns: unquoted commas, most likely
                    row[_EXTRA] = f"{len(extra)} more cell(s) than the header has columns " \
                                  "(quote cells that contain commas)"
                yield reader.line_num, row
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: each line must be a JSON object")
            unknown = set(row) - _MANIFEST_FIELDS
            if unknown:
                raise ValueError(f"{path}:{n}: unknown field(s) {sorted(unknown)}; expected "
                                 f"{sorted(_MANIFEST_FIELDS)}")
            yield n, row


def read_manifest(path: Path, default_prompt: Prompt | None, frame: int | None,
                  slice: int | None, axis: int) -> list[Item]:
    """Items of a CSV/JSONL manifest (see the module docstring); defaults fill empty cells."""
    base = path.parent
    items: dict[tuple[Any, ...], Item] = {}
    for line, row in _read_manifest_rows(path):
        raw = row.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"{path}:{line}: the 'path' field is empty")
        image = Path(raw.strip())
        image = image if image.is_absolute() else base / image
        item = Item(path=image, prompts=[])
        try:
            if _EXTRA in row:
                raise ValueError(row[_EXTRA])
            item.frame = _int_field(row, "frame", frame)
            item.slice = _int_field(row, "slice", slice)
            item.axis = _int_field(row, "axis", axis) or 0
            mask = row.get("mask")
            if mask is not None and not isinstance(mask, str):
                raise ValueError(f"mask must be a path, got {mask!r}")
            if isinstance(mask, str) and mask.strip():
                mask_path = Path(mask.strip())
                mask = str(mask_path if mask_path.is_absolute() else base / mask_path)
            prompt = prompt_from_fields(row.get("points"), row.get("labels"), row.get("box"),
                                        mask or None)
        except ValueError as e:
            item.problems.append(f"{path.name} line {line}: {e}")
            prompt = Prompt()
        if prompt.is_empty() and not item.problems:
            if default_prompt is None or default_prompt.is_empty():
                item.problems.append(f"{path.name} line {line}: no prompt (give points, box or "
                                     "mask in the manifest, or --point/--box)")
            else:
                prompt = default_prompt
        ident = row.get("id")
        item.id = None if ident in (None, "") else str(ident)
        same = items.get(item.where())
        if same is None:
            item.prompts = [prompt] if not prompt.is_empty() else []
            items[item.where()] = item
        else:  # another object of the same image
            if not prompt.is_empty():
                same.prompts.append(prompt)
            same.problems += item.problems
    return list(items.values())


def _inner_point(mask: np.ndarray) -> tuple[float, float]:
    """A foreground point of a mask: its centroid when that lies inside the mask, else the pixel
    farthest from the background (a centroid can fall outside a crescent or ring)."""
    ys, xs = np.nonzero(mask)
    cx, cy = float(xs.mean()), float(ys.mean())
    if mask[min(round(cy), mask.shape[0] - 1), min(round(cx), mask.shape[1] - 1)]:
        return cx + 0.5, cy + 0.5
    import cv2

    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def _annotation_mask(ann: dict[str, Any], h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg, dict) and isinstance(seg.get("counts"), list):
        rle = mask_utils.frPyObjects(seg, h, w)
    elif isinstance(seg, dict):
        counts = seg["counts"]
        rle = {"size": seg["size"],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"annotation {ann.get('id')} has no segmentation to take a point from")
    return mask_utils.decode(rle).astype(bool)


def _coco_object(ann: dict[str, Any], image: dict[str, Any], mode: str) -> Prompt:
    if mode == "box":
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"annotation {ann.get('id')} has no bbox [x, y, w, h]")
        x, y, bw, bh = (float(v) for v in bbox)
        return Prompt(box=(x, y, x + bw, y + bh))
    mask = _annotation_mask(ann, int(image["height"]), int(image["width"]))
    if not mask.any():
        raise ValueError(f"annotation {ann.get('id')} has an empty mask")
    return Prompt(points=[_inner_point(mask)], labels=[1])


def read_coco(path: Path, mode: str = "box", image_root: Path | None = None) -> list[Item]:
    """Items of a COCO file (see the module docstring), in the order of its ``images``."""
    if mode not in ("box", "point"):
        raise ValueError(f"coco prompt must be 'box' or 'point', got {mode!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: a COCO file needs 'images' and 'annotations' lists")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        if isinstance(ann, dict) and not ann.get("iscrowd"):
            by_image.setdefault(ann.get("image_id"), []).append(ann)
    root = image_root or path.parent
    if image_root is None:
        first = next((im for im in data["images"] if isinstance(im, dict)), None)
        if first is not None and not (root / str(first.get("file_name", ""))).exists() \
                and (root / "images" / str(first.get("file_name", ""))).exists():
            root = root / "images"
            log.info("%s: image files found under %s", path.name, root)
    items: list[Item] = []
    for image in data["images"]:
        anns = by_image.get(image.get("id"), []) if isinstance(image, dict) else []
        if not anns:
            continue  # nothing to segment in this image
        image_id = image.get("id")
        if isinstance(image_id, bool) or not isinstance(image_id, int) \
                or not isinstance(image.get("file_name"), str):
            raise ValueError(f"{path}: COCO image {image_id!r} needs an integer 'id' and a "
                             "'file_name'")
        item = Item(path=root / image["file_name"], prompts=[],
                    coco=CocoRef(image_id, [], []), id=str(image_id))
        assert item.coco is not None
        for ann in anns:
            try:
                prompt = _coco_object(ann, image, mode)
                ids = int(ann.get("id", 0)), int(ann.get("category_id", 1))
            except (ValueError, KeyError, TypeError) as e:
                item.problems.append(f"{path.name}: annotation {ann.get('id')!r}: {e}")
                continue
            item.prompts.append(prompt)
            item.coco.annotation_ids.append(ids[0])
            item.coco.category_ids.append(ids[1])
        items.append(item)
    skipped = len(data["images"]) - len(items)
    if skipped:
        log.info("%s: %d image(s) without annotations are not segmented", path.name, skipped)
    return items


def _is_coco(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def collect_items(inputs: list[str | Path], default_prompt: Prompt | None = None,
                  frame: int | None = None, slice: int | None = None, axis: int = 0,
                  coco_prompt: str = "box", image_root: Path | None = None,
                  exclude: Path | None = None) -> list[Item]:
    """Expand every input (see the module docstring) into items, merged and in input order.

    Raises:
        ValueError: an input that is neither a file, a folder, a manifest nor a matching glob;
            a folder without images; an unreadable manifest.
    """
    items: list[Item] = []

    def add_file(p: Path) -> None:
        prompts = [default_prompt] if default_prompt and not default_prompt.is_empty() else []
        items.append(Item(path=p, prompts=prompts, frame=frame, slice=slice, axis=axis))

    for raw in inputs:
        p = Path(raw)
        text = str(raw)
        if p.is_dir():
            found = scan_folder(p, exclude)
            if not found:
                raise ValueError(f"no image files found under folder {p}")
            for f in found:
                add_file(f)
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            items += read_manifest(p, default_prompt, frame, slice, axis)
        elif p.is_file() and _is_coco(p):
            items += read_coco(p, coco_prompt, image_root)
        elif p.is_file():
            add_file(p)
        elif any(ch in text for ch in _GLOB_MAGIC):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True)
                             if Path(m).is_file() and not _inside(Path(m), exclude))
            if not matches:
                raise ValueError(f"no file matches the pattern {text!r}")
            for m in matches:
                add_file(m)
        else:
            raise ValueError(f"no such file, folder or matching pattern: {text}")
    if not items:
        raise ValueError("no images to segment")
    merged: dict[tuple[Any, ...], Item] = {}
    for item in items:
        same = merged.get(item.where())
        if same is None:
            merged[item.where()] = item
        elif same.coco is None and item.coco is None:
            # The same image reached twice (a folder and a file inside it): one item, and
            # distinct prompts from manifests become extra objects.
            for prompt in item.prompts:
                if prompt not in same.prompts:
                    same.prompts.append(prompt)
        else:
            raise ValueError(f"{item.label()} is listed by a COCO file and by another input; "
                             "give it once")
    out = list(merged.values())
    for i, item in enumerate(out):
        item.index = i
        if not item.prompts and not item.problems:
            item.problems.append("no prompt: give --point, --box or --mask-prompt, or a "
                                 "manifest with per-image prompts")
    return out
