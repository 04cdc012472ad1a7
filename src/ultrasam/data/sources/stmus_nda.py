"""STMUS_NDA: transverse musculoskeletal ultrasound of three muscles, healthy and pathological.

Native layout (the Mendeley archive holds a nested zip; both are read in place):
``Polito-Radboud-DeepLearningUS/{BB,GM,TA}/{Healthy,Pathological}/{Images,Masks}/<id>.png``.
A mask is a PNG with ``Masks`` in its path, paired with the image of the same stem whose path
has ``Images`` instead. Masks are binary (0/1 or 0/255, both accepted); other values are warned
about. Structure ``muscle`` (the cross-section of the imaged muscle); the muscle
(BB = biceps brachii, GM = gastrocnemius medialis, TA = tibialis anterior) is recorded in the
image's ``muscle`` field and Healthy / Pathological in its ``label``.
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._shapes import binary_mask_values, decode_image_bytes, decode_mask_bytes, format_unknown
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="STMUS_NDA",
    aliases=("STMUS-NDA", "STMUS"),
    url="https://data.mendeley.com/datasets/3jykz7wz8d/1",
    citation=("Marzola F, van Alfen N, Doorduin J, Meiburger KM. Deep learning segmentation of "
              "transverse musculoskeletal ultrasound images for neuromuscular disease "
              "assessment. Computers in Biology and Medicine 135:104623 (2021)."),
    licence="unknown — check upstream (Mendeley Data record)",
    anatomy="skeletal muscle",
    structures=("muscle",),
    kind="2d",
    native_format="{BB,GM,TA}/{Healthy,Pathological}/{Images,Masks}/*.png; binary masks",
)

_MUSCLES = {"bb": "biceps_brachii", "gm": "gastrocnemius_medialis", "ta": "tibialis_anterior"}
_CONDITIONS = {"healthy": "healthy", "pathological": "pathological"}


def _key(entry: TreeEntry) -> tuple[tuple[str, ...], str] | None:
    """((path without the Images/Masks folder), role) or None for other files."""
    folders = [p.lower() for p in entry.parts[:-1]]
    for role, folder in (("mask", "masks"), ("image", "images")):
        if folder in folders:
            i = len(folders) - 1 - folders[::-1].index(folder)
            rest = tuple(entry.parts[:i]) + tuple(entry.parts[i + 1:-1]) + (entry.stem,)
            return rest, role
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert an STMUS_NDA tree into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, ...], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            found = _key(entry)
            if found is not None:
                pairs.setdefault(found[0], {})[found[1]] = entry
        if not any("mask" in p for p in pairs.values()):
            raise FileNotFoundError(f"no STMUS_NDA masks under {native_dir}: expected "
                                    "{BB,GM,TA}/.../Masks/*.png")
        for key in sorted(pairs, key=lambda k: tuple(natural_key(p) for p in k)):
            _convert_pair(key, pairs[key], writer)


def _convert_pair(key: tuple[str, ...], pair: dict[str, TreeEntry], writer: CocoWriter) -> None:
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
    muscle_mask, unknown = binary_mask_values(raw)
    if unknown:
        writer.warn(mask_entry.path, f"unexpected mask {format_unknown(unknown)}; "
                                     "only 1 and 255 are muscle")
    folders = [p.lower() for p in key[:-1]]
    muscle = next((_MUSCLES[p] for p in folders if p in _MUSCLES), None)
    condition = next((_CONDITIONS[p] for p in folders if p in _CONDITIONS), None)
    try:
        writer.add_image(image, {"muscle": muscle_mask}, source=image_entry.path, label=condition,
                         extra={"muscle": muscle})
    except ValueError as e:
        writer.warn(mask_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
