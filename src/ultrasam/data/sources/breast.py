"""BrEaST: Breast-Lesions-USG (The Cancer Imaging Archive).

Native layout: ``caseNNN.png`` scans and masks ``caseNNN_tumor.png`` (the lesion) and
``caseNNN_other.png`` (other findings outlined by the radiologists); a trailing number
(``caseNNN_tumor2.png``) marks further masks of the same kind. Masks are binary (0/255 or 0/1).
Any other ``caseNNN_<suffix>.png`` is warned about. Each case is one patient (``group``).

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask, read_entry_image, read_entry_mask
from ._read import UnreadableFile
from ._tree import NativeTree, TreeEntry

_NAME = re.compile(r"^(?P<case>case\d+)(?:_(?P<kind>[a-z]+?)\d*)?$", re.IGNORECASE)
_KINDS = {"tumor": "breast_lesion", "tumour": "breast_lesion", "other": "breast_other_finding"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Each ``caseNNN.png`` with its tumour masks and other-finding masks, one annotation per
    mask file (touching findings drawn in separate files stay separate instances)."""
    images: dict[str, TreeEntry] = {}
    masks: dict[str, list[tuple[str, TreeEntry]]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".png"):
            m = _NAME.match(e.stem)
            if m is None:
                writer.warn(e.path, "name is not caseNNN[_tumor|_other].png; skipped")
            elif m.group("kind") is None:
                images[m.group("case").lower()] = e
            elif m.group("kind").lower() not in _KINDS:
                writer.warn(e.path, f"unknown mask kind {m.group('kind')!r}; skipped")
            else:
                masks.setdefault(m.group("case").lower(), []).append(
                    (_KINDS[m.group("kind").lower()], e))
        for case in sorted(images):
            img_e = images[case]
            try:
                image = read_entry_image(img_e)
                structures: dict[str, list[np.ndarray]] = {s: [] for s in set(_KINDS.values())}
                for structure, mask_e in masks.get(case, []):
                    mask = binary_mask(read_entry_mask(mask_e))
                    if mask.shape != image.shape[:2]:
                        writer.warn(mask_e.path, f"mask {mask.shape[::-1]} does not match the "
                                                 f"image {image.shape[1::-1]}; case skipped")
                        break
                    structures[structure].append(mask)
                else:
                    add_or_warn(writer, image, structures, img_e.path, group=case,
                                name_parts=(case,))
            except UnreadableFile as e:
                writer.warn(str(e.path), e.reason)
        for case in sorted(set(masks) - set(images)):
            writer.warn(masks[case][0][1].path, "mask without a caseNNN.png image; skipped")


SOURCE = Source(
    spec=SourceSpec(
        name="BrEaST",
        aliases=("BrEaST-Lesions_USG", "Breast-Lesions-USG", "BREAST"),
        url="https://www.cancerimagingarchive.net/collection/breast-lesions-usg/",
        citation="Pawlowska et al., Curated benchmark dataset for ultrasound based breast lesion "
                 "analysis, Scientific Data 11 (2024); TCIA 10.7937/9WKK-Q141",
        licence="CC-BY-4.0 (TCIA) — check upstream",
        anatomy="breast",
        structures=("breast_lesion", "breast_other_finding"),
        kind="2d",
        native_format="caseNNN.png + caseNNN_tumor[k].png / caseNNN_other[k].png binary masks",
    ),
    convert=convert,
)
