"""BUSI: Breast Ultrasound Images (Cairo University), benign / malignant / normal scans.

Layout (official and shared copy)::

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<cls> (k).png
                                                  /<cls> (k)_mask.png, _mask_1.png, _mask_2.png

Every mask file of an image marks one lesion (0/255; some are RGBA or 1-bit): each file is its
own annotation, split into components on its own, so lesions drawn in separate files stay
separate instances even where they touch or nest (full BUSI: 665 instances; a union would merge
three pairs, benign 58, 181 and 195). The folder gives the image-level label; normal scans keep
their (empty) masks and are written as negatives.

Overlays checked: the images carry scanner text and caliper crosses (kept: they are part of the
scan a user holds); in the 13 native samples the masks hold no text or marks, only two isolated
1-px specks beside a lesion (``malignant (1)_mask.png``), removed by the small-component rule.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import warn_orphans
from ._read import UnreadableFile, natural_sorted, read_image, read_mask, relative_source, threshold

STRUCTURE = "breast_lesion"
LABELS = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_\d+)?$", re.IGNORECASE)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every BUSI image under ``native_dir`` with one annotation per lesion mask file."""
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
    claimed: set[Path] = set()
    for image_path in natural_sorted(images):
        mask_paths = natural_sorted(masks.get((image_path.parent, image_path.stem.lower()), []))
        claimed.update(mask_paths)
        source = relative_source(image_path, native_dir)
        if not mask_paths:
            # No mask file means "not annotated", not "no lesion": never write it as a negative.
            writer.warn(source, "no mask file; image skipped")
            continue
        try:
            image = read_image(image_path)
            lesions = []
            for mp in mask_paths:
                m = threshold(read_mask(mp), 128)
                if m.shape != image.shape[:2]:
                    raise UnreadableFile(mp, f"mask is {m.shape}, image is {image.shape[:2]}")
                lesions.append(m)
        except UnreadableFile as e:
            writer.warn(relative_source(e.path, native_dir), f"{e.reason}; pair skipped")
            continue
        folder = image_path.parent.name.lower()
        writer.add_image(image, {STRUCTURE: lesions}, source=source,
                         label=folder if folder in LABELS else None,
                         name_parts=(folder if folder in LABELS else "",))
    warn_orphans((p for ps in masks.values() for p in ps), claimed, native_dir, writer)


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
