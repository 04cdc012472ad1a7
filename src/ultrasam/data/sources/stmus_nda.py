"""STMUS_NDA: transverse musculoskeletal ultrasound of three muscles, healthy and pathological.

Native layout (the Mendeley archive holds a nested zip; both are read in place):
``Polito-Radboud-DeepLearningUS/{BB,GM,TA}/{Healthy,Pathological}/{Images,Masks}/<id>.png``.
A mask is a PNG with ``Masks`` in its path, paired with the image of the same stem whose path
has ``Images`` instead. Masks are binary (0/1 or 0/255, both accepted); other values are warned
about. Structure ``muscle`` (the cross-section of the imaged muscle); the muscle
(BB = biceps brachii, GM = gastrocnemius medialis, TA = tibialis anterior) is recorded in the
image's ``muscle`` field and Healthy / Pathological in its ``label``.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import (Pair, add_or_skip, binary_foreground, collect_pairs, load_pair,
                     role_folder_key)
from ._read import IMAGE_SUFFIXES, natural_key
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


_ROLES = {"mask": ("masks",), "image": ("images",)}


def _key(entry: TreeEntry) -> tuple[tuple[str, ...], str] | None:
    """((path without the Images/Masks folder), role) or None for other files."""
    return role_folder_key(entry, _ROLES)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert an STMUS_NDA tree into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        pairs = collect_pairs(tree.files(lambda e: e.suffix in IMAGE_SUFFIXES), _key)
        if not any("mask" in p for p in pairs.values()):
            raise FileNotFoundError(f"no STMUS_NDA masks under {native_dir}: expected "
                                    "{BB,GM,TA}/.../Masks/*.png")
        for key in sorted(pairs, key=lambda k: tuple(natural_key(p) for p in k)):
            _convert_pair(key, pairs[key], writer)


def _convert_pair(key: tuple[str, ...], pair: Pair, writer: CocoWriter) -> None:
    loaded = load_pair(pair.get("image"), pair.get("mask"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    muscle_mask = binary_foreground(raw, writer, mask_entry.path, "muscle")
    folders = [p.lower() for p in key[:-1]]
    muscle = next((_MUSCLES[p] for p in folders if p in _MUSCLES), None)
    condition = next((_CONDITIONS[p] for p in folders if p in _CONDITIONS), None)
    add_or_skip(writer, image, {"muscle": muscle_mask}, mask_entry.path,
                source=image_entry.path, label=condition, extra={"muscle": muscle})


SOURCE = Source(spec=SPEC, convert=convert)
