"""BUID: breast ultrasound images with lesion masks (qamebi.com).

Native layout: ``Benign.zip`` and ``Malignant.zip`` (read in place, or their extracted folders)
holding ``<n> Image.bmp`` scans and ``<n> Mask.tif`` masks; a mask pixel is lesion when its grey
value is >= 150. ``label`` = benign / malignant from the archive or folder name.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn
from ._pairs import read_entry_pair
from ._read import natural_key, threshold
from ._tree import NativeTree, TreeEntry

_ROLE = re.compile(r"^(?P<key>.*?)[ _\-]*(?P<role>image|mask)$", re.IGNORECASE)
_LABELS = ("benign", "malignant")


def _label(e: TreeEntry) -> str | None:
    for part in reversed(e.parts[:-1]):
        low = part.lower().removesuffix(".zip")
        if low in _LABELS:
            return low
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """``*Image.bmp`` paired with ``*Mask.tif`` of the same prefix in the same folder."""
    images: dict[tuple[str, str], TreeEntry] = {}
    masks: dict[tuple[str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix in (".bmp", ".tif", ".tiff", ".png")):
            m = _ROLE.match(e.stem)
            if m is None:
                continue
            key = (e.parent, m.group("key"))
            (images if m.group("role").lower() == "image" else masks)[key] = e
        for key in sorted(images, key=lambda k: natural_key("/".join(k))):
            img_e = images[key]
            if key not in masks:
                writer.warn(img_e.path, "no '<n> Mask' file; skipped")
                continue
            read = read_entry_pair(img_e, masks[key], writer)
            if read is None:
                continue
            image, mask = read[0], threshold(read[1], 150)
            label = _label(img_e)
            add_or_warn(writer, image, {"breast_lesion": mask}, img_e.path, label=label,
                        name_parts=(label or "",))


SOURCE = Source(
    spec=SourceSpec(
        name="BUID",
        aliases=("Breast Ultrasound Image Dataset",),
        url="https://qamebi.com/breast-ultrasound-images-database/",
        citation="Abbasian Ardakani et al., An open-access breast lesion ultrasound image "
                 "database: applicable in artificial intelligence studies, Computers in Biology "
                 "and Medicine 152 (2023)",
        licence="unknown — check upstream",
        anatomy="breast",
        structures=("breast_lesion",),
        kind="2d",
        native_format="Benign.zip / Malignant.zip of '<n> Image.bmp' + '<n> Mask.tif'; "
                      "grey >= 150 = lesion",
    ),
    convert=convert,
)
