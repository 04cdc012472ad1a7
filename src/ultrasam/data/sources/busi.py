"""BUSI: Breast Ultrasound Images (Cairo University), benign / malignant / normal scans.

Layout (official and shared copy)::

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<cls> (k).png
                                                  /<cls> (k)_mask.png, _mask_1.png, _mask_2.png

Every mask file of an image marks one lesion (0/255; some are RGBA or 1-bit): their union is the
``breast_lesion`` mask and the writer splits it into components. The folder gives the image-level
label; normal scans keep their (empty) masks and are written as negatives.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import UnreadableFile, natural_sorted, read_image, read_mask, relative_source, threshold

STRUCTURE = "breast_lesion"
LABELS = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_\d+)?$", re.IGNORECASE)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every BUSI image under ``native_dir`` with the union of its lesion masks."""
    native_dir = Path(native_dir)
    pngs = [p for p in native_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".png"]
    masks: dict[tuple[Path, str], list[Path]] = {}
    images: list[Path] = []
    for p in pngs:
        m = _MASK.match(p.stem)
        if m:
            masks.setdefault((p.parent, m["stem"].lower()), []).append(p)
        else:
            images.append(p)
    for image_path in natural_sorted(images):
        mask_paths = natural_sorted(masks.get((image_path.parent, image_path.stem.lower()), []))
        source = relative_source(image_path, native_dir)
        if not mask_paths:
            # No mask file means "not annotated", not "no lesion": never write it as a negative.
            writer.warn(source, "no mask file; image skipped")
            continue
        try:
            image = read_image(image_path)
            lesion = np.zeros(image.shape[:2], bool)
            for mp in mask_paths:
                m = threshold(read_mask(mp), 128)
                if m.shape != lesion.shape:
                    raise UnreadableFile(mp, f"mask is {m.shape}, image is {lesion.shape}")
                lesion |= m
        except UnreadableFile as e:
            writer.warn(relative_source(e.path, native_dir), f"{e.reason}; pair skipped")
            continue
        folder = image_path.parent.name.lower()
        writer.add_image(image, {STRUCTURE: lesion}, source=source,
                         label=folder if folder in LABELS else None,
                         name_parts=(folder if folder in LABELS else "",))


SOURCE = Source(
    spec=SourceSpec(
        name="BUSI",
        aliases=("Dataset_BUSI_with_GT", "BUSI_with_GT"),
        url="https://scholar.cu.edu.eg/?q=afahmy/pages/dataset",
        citation="Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound "
                 "images. Data in Brief 28 (2020) 104863.",
        licence="open-access data article (CC-BY-4.0 article); cite the paper",
        anatomy="breast",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="PNG images; one 0/255 PNG mask per lesion (_mask, _mask_1, _mask_2)",
        real_sample_tests=True,
        notes="labels benign/malignant/normal from the folder; normal scans kept as negatives",
    ),
    convert=convert,
)
