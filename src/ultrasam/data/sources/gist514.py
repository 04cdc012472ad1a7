"""GIST514-DB: endoscopic ultrasound of gastrointestinal stromal tumours and leiomyomas.

Native layout (folder or archive): ``usd514_jpeg_roi/images/*.jpg`` and COCO files
``usd514_jpeg_roi/annotations/{train,val}_anno_crop_split_0.json`` whose ``segmentation`` is a
polygon list (RLE accepted too). Split 0 is the one UltraSam uses; its ``val`` file is the test
set (``split = "test"``), ``train`` is ``"train"``; the other cross-validation splits are not
read. Category ids come from each file's ``categories`` (1 leiomyoma, 2 GIST); the category
becomes both the structure and the image ``label``. Unknown category ids, malformed JSON,
missing images and undecodable polygons are warned about, naming the file.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile
from ._shapes import coco_segmentation_mask, decode_image_bytes, load_json_bytes
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="GIST514-DB",
    aliases=("GIST514", "GIST-514", "usd514"),
    url="https://github.com/howardchina/query2",
    citation=("He Q, Bano S, Liu J, Liu W, Stoyanov D, Zuo S. Query2: Query over queries for "
              "improving gastrointestinal stromal tumour detection in an endoscopic ultrasound. "
              "Computers in Biology and Medicine 152:106424 (2023)."),
    licence="unknown — check upstream (third-party loaders cite CC-BY-NC-SA-4.0)",
    anatomy="stomach (endoscopic ultrasound)",
    structures=("gastrointestinal_stromal_tumor", "leiomyoma"),
    kind="2d",
    native_format=("usd514_jpeg_roi/images/*.jpg + COCO-polygon "
                   "annotations/{train,val}_anno_crop_split_0.json (val = test)"),
)

_ANNOTATION = re.compile(r"^(train|val)_anno_crop_split_0\.json$", re.IGNORECASE)
_SPLITS = {"train": "train", "val": "test"}
_CATEGORY_NAMES = {"gist": "gastrointestinal_stromal_tumor", "leiomyoma": "leiomyoma"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a GIST514-DB tree into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        images: dict[str, TreeEntry] = {}
        for e in entries:
            if e.suffix in IMAGE_SUFFIXES and "images" in (p.lower() for p in e.parts[:-1]):
                images.setdefault(e.name, e)
        annotation_files = sorted((e for e in entries if _ANNOTATION.match(e.name)),
                                  key=lambda e: (e.name.lower() != "train_anno_crop_split_0.json",
                                                 e.path))
        if not annotation_files:
            raise FileNotFoundError(f"no GIST514-DB annotations under {native_dir}: expected "
                                    "annotations/{train,val}_anno_crop_split_0.json")
        seen: set[str] = set()
        for ann_entry in annotation_files:
            match = _ANNOTATION.match(ann_entry.name)
            assert match is not None  # annotation_files were selected with this pattern
            split = _SPLITS[match.group(1).lower()]
            _convert_file(ann_entry, split, images, seen, writer)


def _structure(category: dict[str, Any]) -> str | None:
    return _CATEGORY_NAMES.get(str(category.get("name", "")).strip().lower())


def _convert_file(ann_entry: TreeEntry, split: str, images: dict[str, TreeEntry],
                  seen: set[str], writer: CocoWriter) -> None:
    try:
        coco = load_json_bytes(ann_entry.read_bytes())
        records = coco["images"]
        annotations = coco.get("annotations", [])
        categories = {int(c["id"]): c for c in coco.get("categories", [])}
        if not isinstance(records, list):
            raise TypeError("'images' is not a list")
    except (ValueError, OSError, KeyError, TypeError) as e:
        writer.warn(ann_entry.path, f"skipped: not a readable COCO file ({e})")
        return
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for a in annotations:
        by_image.setdefault(a.get("image_id"), []).append(a)
    for record in records:
        name = Path(str(record.get("file_name", ""))).name
        image_entry = images.get(name)
        if image_entry is None:
            writer.warn(ann_entry.path, f"image {name!r} not found under images/; skipped")
            continue
        if name in seen:
            writer.warn(ann_entry.path, f"image {name!r} already converted from another "
                                        "annotation file; skipped")
            continue
        seen.add(name)
        try:
            image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
        except (UnreadableFile, OSError) as e:
            writer.warn(image_entry.path, getattr(e, "reason", str(e)))
            continue
        shape = image.shape[:2]
        masks: dict[str, np.ndarray] = {}
        for a in by_image.get(record.get("id"), []):
            try:
                category = categories.get(int(a.get("category_id")))
            except (TypeError, ValueError):
                category = None
            structure = _structure(category) if category else None
            if structure is None:
                writer.warn(ann_entry.path, f"annotation {a.get('id')} of {name!r}: unknown "
                                            f"category {a.get('category_id')!r}; ignored")
                continue
            try:
                m = coco_segmentation_mask(a.get("segmentation"), shape)
            except ValueError as e:
                writer.warn(ann_entry.path, f"annotation {a.get('id')} of {name!r}: {e}")
                continue
            masks[structure] = masks[structure] | m if structure in masks else m
        label = next(iter(masks)) if len(masks) == 1 else None
        try:
            writer.add_image(image, masks, source=image_entry.path, split=split, label=label)
        except ValueError as e:
            writer.warn(image_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
