"""CCAUI: Common Carotid Artery Ultrasound Images (Mendeley d4xt63mgjm).

Layout (official and shared copy)::

    Common Carotid Artery Ultrasound Images/US images/<recording>_slice_<n>.png
    Common Carotid Artery Ultrasound Images/Expert mask images/<recording>_slice_<n>.png

Transverse sweeps of the neck; the expert mask (0/255) outlines the common carotid artery's
cross-section. ``group`` is the recording id and ``frame`` the slice number, since slices of one
recording are near-duplicates.

Overlays checked: neither the 10 native-sample images nor their masks carry text, calipers or
marks; masks hold one region each.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import IMAGE_SUFFIXES, find_dirs, natural_sorted, threshold

STRUCTURE = "carotid_artery"
_SLICE = re.compile(r"^(?P<recording>.+?)_slice_(?P<n>\d+)$", re.IGNORECASE)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every ``US images`` slice under ``native_dir`` with its expert mask."""
    native_dir = Path(native_dir)
    for image_dir in find_dirs(native_dir, "US images"):
        mask_dir = image_dir.parent / "Expert mask images"
        if not mask_dir.is_dir():
            continue
        pairs = matched_pairs(
            natural_sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            lambda image_path, masks=mask_dir: masks / image_path.name, native_dir, writer,
            orphans=(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        for image_path, source, image, raw in pairs:
            artery = threshold(raw, 128)
            m = _SLICE.match(image_path.stem)
            writer.add_image(image, {STRUCTURE: artery}, source=source,
                             group=m["recording"] if m else None,
                             frame=int(m["n"]) if m else None)


SOURCE = Source(
    spec=SourceSpec(
        name="CCAUI",
        aliases=("Common Carotid Artery Ultrasound Images", "CCA-UI"),
        url="https://data.mendeley.com/datasets/d4xt63mgjm",
        citation="Momot A. Common Carotid Artery Ultrasound Images. Mendeley Data (2022), "
                 "doi:10.17632/d4xt63mgjm.1.",
        licence="CC-BY-4.0",
        anatomy="neck / carotid artery",
        structures=(STRUCTURE,),
        kind="frames",
        native_format="PNG images; 0/255 PNG expert masks with the same names",
        real_sample_tests=True,
        notes="group = recording, frame = slice number",
    ),
    convert=convert,
)
