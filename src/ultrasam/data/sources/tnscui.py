"""TNSCUI: thyroid nodule segmentation images of the TN-SCUI 2020 challenge.

Native layout (VOC-style, folder or archive): ``JPEGImages/<id>.jpg`` and
``SegmentationClass/<id>.png``, paired by file stem within the same parent folder. Masks are
stored as 0/1 in some copies and 0/255 in others: both 1 and 255 are nodule (the UltraSam
reference kept only pixels equal to 1, losing every 0/255 mask). Any other non-zero value is
warned about, naming the file, and not counted as nodule. No patient id: ``group`` is null.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import Pair, add_or_skip, binary_foreground, collect_pairs, load_pair
from ._read import IMAGE_SUFFIXES, natural_key
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="TNSCUI",
    aliases=("TN-SCUI", "TN-SCUI2020", "tnscui2020"),
    url="https://tn-scui2020.grand-challenge.org",
    citation=("TN-SCUI 2020: Thyroid Nodule Segmentation and Classification in Ultrasound Images "
              "challenge, MICCAI 2020 (cite the challenge as its website asks)."),
    licence="unknown — check upstream (challenge data terms)",
    anatomy="thyroid",
    structures=("thyroid_nodule",),
    kind="2d",
    native_format="JPEGImages/*.jpg + SegmentationClass/*.png; masks 0/1 or 0/255",
)

_ROLES = {"jpegimages": "image", "segmentationclass": "mask"}


def _key(entry: TreeEntry) -> tuple[tuple[str, str], str] | None:
    """((folder above the role folder, stem), role) or None for files outside the role folders."""
    if len(entry.parts) < 2:
        return None
    role = _ROLES.get(entry.parts[-2].lower())
    return None if role is None else (("/".join(entry.parts[:-2]), entry.stem), role)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a TNSCUI tree into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        pairs = collect_pairs(tree.files(lambda e: e.suffix in IMAGE_SUFFIXES), _key)
        if not pairs:
            raise FileNotFoundError(f"no TNSCUI files under {native_dir}: expected "
                                    "JPEGImages/*.jpg and SegmentationClass/*.png")
        for key in sorted(pairs, key=lambda k: (k[0], natural_key(k[1]))):
            _convert_pair(pairs[key], writer)


def _convert_pair(pair: Pair, writer: CocoWriter) -> None:
    loaded = load_pair(pair.get("image"), pair.get("mask"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    nodule = binary_foreground(raw, writer, mask_entry.path, "nodule")
    add_or_skip(writer, image, {"thyroid_nodule": nodule}, mask_entry.path,
                source=image_entry.path)


SOURCE = Source(spec=SPEC, convert=convert)
