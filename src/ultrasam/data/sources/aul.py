"""AUL: Annotated Ultrasound Liver images (Zenodo 7272660).

Native layout: ``{Benign,Malignant,Normal}/[<P>/]image/N.jpg`` with polygons in
``.../segmentation/{liver,mass,outline}/N.json`` (each a list of polygons, a polygon being a list
of ``[x, y]`` points; a bare list of points is one polygon). ``label`` = the class folder.

Structures: ``liver`` and ``liver_lesion`` (the ``mass`` polygons). The ``outline`` polygons are
*not* a structure: in AUL they trace the border of the ultrasound field of view (the imaging fan),
so keeping them, as the UltraSam reference did, teaches the model to segment the scan sector.
They are therefore ignored; any other polygon folder name is warned about.
``group`` = the intermediate ``<P>`` folder when the release has one, else none.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, polygon_mask, read_entry_image
from ._read import UnreadableFile, natural_key
from ._tree import NativeTree, TreeEntry

_STRUCTURES = {"liver": "liver", "mass": "liver_lesion"}
_IGNORED = {"outline"}  # field-of-view border, not anatomy (see module docstring)
_CLASSES = {"benign", "malignant", "normal"}


def _polygons(data: Any) -> list[list[list[float]]]:
    """A list of polygons from the JSON (a single polygon is wrapped)."""
    if not isinstance(data, list):
        raise ValueError(f"expected a list of polygons, got {type(data).__name__}")
    if data and isinstance(data[0], list) and data[0] and not isinstance(data[0][0], list):
        return [data]
    return data


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """One image per ``image/*.jpg`` with its liver and lesion polygons rasterised."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        polygons: dict[tuple[str, str], list[TreeEntry]] = {}
        for e in entries:
            parts = e.parts
            if e.suffix == ".json" and len(parts) >= 3 and parts[-3].lower() == "segmentation":
                case_dir = "/".join(parts[:-3])
                polygons.setdefault((case_dir, e.stem), []).append(e)
        images = [e for e in entries if e.suffix in (".jpg", ".jpeg", ".png")
                  and len(e.parts) >= 2 and e.parts[-2].lower() == "image"]
        for img_e in sorted(images, key=lambda e: natural_key(e.path)):
            case_dir = "/".join(img_e.parts[:-2])
            classes = [p.lower() for p in img_e.parts[:-2] if p.lower() in _CLASSES]
            label = classes[-1] if classes else None
            sub = img_e.parts[:-2]
            idx = max((i for i, p in enumerate(sub) if p.lower() in _CLASSES), default=-1)
            group = "/".join(sub[idx:]) if idx >= 0 and len(sub) > idx + 1 else None
            try:
                image = read_entry_image(img_e)
            except UnreadableFile as e:
                writer.warn(str(e.path), e.reason)
                continue
            # One annotation per polygon file: separately drawn regions stay separate instances.
            masks: dict[str, list[np.ndarray]] = {s: [] for s in _STRUCTURES.values()}
            ok = True
            for js in polygons.get((case_dir, img_e.stem), []):
                folder = js.parts[-2].lower()
                if folder in _IGNORED:
                    continue
                if folder not in _STRUCTURES:
                    writer.warn(js.path, f"unknown polygon folder {js.parts[-2]!r}; ignored")
                    continue
                try:
                    polys = _polygons(json.loads(js.read_bytes().decode("utf-8")))
                    masks[_STRUCTURES[folder]].append(polygon_mask(polys, image.shape[:2]))
                except (ValueError, UnicodeDecodeError, OSError) as e:
                    writer.warn(js.path, f"unreadable polygons ({e}); image skipped")
                    ok = False
            if ok:
                add_or_warn(writer, image, masks, img_e.path, group=group, label=label,
                            name_parts=tuple(p for p in (label, group and group.split("/")[-1])
                                             if p))


SOURCE = Source(
    spec=SourceSpec(
        name="AUL",
        aliases=("Annotated Ultrasound Liver",),
        url="https://zenodo.org/records/7272660",
        citation="Xu et al., Annotated Ultrasound Liver images (AUL), Zenodo "
                 "10.5281/zenodo.7272660 (2022)",
        licence="unknown — check upstream (Zenodo record 7272660)",
        anatomy="liver",
        structures=("liver", "liver_lesion"),
        kind="2d",
        native_format="{Benign,Malignant,Normal}/[<P>/]image/N.jpg + segmentation/{liver,mass,"
                      "outline}/N.json polygon lists",
        notes="'outline' polygons (field-of-view border) are deliberately not converted",
    ),
    convert=convert,
)
