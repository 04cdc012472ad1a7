"""TNSCUI: thyroid nodule segmentation images of the TN-SCUI 2020 challenge.

Native layout (VOC-style, folder or archive): ``JPEGImages/<id>.jpg`` and
``SegmentationClass/<id>.png``, paired by file stem within the same parent folder. Masks are
stored as 0/1 in some copies and 0/255 in others: both 1 and 255 are nodule (the UltraSam
reference kept only pixels equal to 1, losing every 0/255 mask). Any other non-zero value is
warned about, naming the file, and not counted as nodule. No patient id: ``group`` is null.
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._shapes import binary_mask_values, decode_image_bytes, decode_mask_bytes, format_unknown
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


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a TNSCUI tree into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, str], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            if len(entry.parts) < 2:
                continue
            role = _ROLES.get(entry.parts[-2].lower())
            if role is not None:
                prefix = "/".join(entry.parts[:-2])
                pairs.setdefault((prefix, entry.stem), {})[role] = entry
        if not pairs:
            raise FileNotFoundError(f"no TNSCUI files under {native_dir}: expected "
                                    "JPEGImages/*.jpg and SegmentationClass/*.png")
        for key in sorted(pairs, key=lambda k: (k[0], natural_key(k[1]))):
            _convert_pair(pairs[key], writer)


def _convert_pair(pair: dict[str, TreeEntry], writer: CocoWriter) -> None:
    image_entry, mask_entry = pair.get("image"), pair.get("mask")
    if image_entry is None or mask_entry is None:
        present = image_entry or mask_entry
        assert present is not None  # a pair holds at least the entry that created it
        writer.warn(present.path, "no matching " + ("mask" if mask_entry is None else "image"))
        return
    try:
        image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
        raw = decode_mask_bytes(mask_entry.read_bytes(), mask_entry.path)
    except (UnreadableFile, OSError) as e:
        writer.warn(str(getattr(e, "path", image_entry.path)), getattr(e, "reason", str(e)))
        return
    nodule, unknown = binary_mask_values(raw)
    if unknown:
        writer.warn(mask_entry.path, f"unexpected mask {format_unknown(unknown)}; "
                                     "only 1 and 255 are nodule")
    try:
        writer.add_image(image, {"thyroid_nodule": nodule}, source=image_entry.path)
    except ValueError as e:
        writer.warn(mask_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
