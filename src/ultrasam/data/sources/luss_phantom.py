"""LUSS_phantom: lung ultrasound phantom images with artefact / anatomy masks (Leeds 1263).

Native layout (folder or archive): PNG images and PNG label maps; a label map has a ``masks``
folder in its path and pairs with the image of the same stem whose path has ``images`` in that
place (e.g. ``data/{train,test}/{images,masks}/<id>.png``). The grey value of a mask pixel is its
class: 1 rib, 2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence (the order the dataset
lists its classes; any other non-zero value is warned about and ignored). A ``train`` / ``test``
folder in the path gives the split. Phantom recordings carry no subject id: ``group`` is null.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import Pair, add_or_skip, collect_pairs, load_pair, role_folder_key
from ._read import IMAGE_SUFFIXES, natural_key
from ._shapes import format_unknown, split_label_values
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="LUSS_phantom",
    aliases=("LUSS", "LUSS-phantom", "Leeds LUSS"),
    url="https://archive.researchdata.leeds.ac.uk/1263/",
    citation=("Lung ultrasound segmentation and simulation (LUSS) phantom dataset, University of "
              "Leeds Research Data Archive, record 1263 (cite as the record asks)."),
    licence="unknown — check upstream (Leeds data archive record 1263)",
    anatomy="lung (phantom)",
    structures=("rib", "pleural_line", "a_line", "b_line", "b_line_confluence"),
    kind="2d",
    native_format="PNG images + PNG label maps with 'masks' in the path; grey value = class 1-5",
    notes=("Class codes 1-5 follow the order in which the dataset lists its classes; values "
           "outside 1-5 are reported as warnings."),
)

_VALUES = {1: "rib", 2: "pleural_line", 3: "a_line", 4: "b_line", 5: "b_line_confluence"}
_SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test",
           "val": "val", "validation": "val"}


_ROLES = {"mask": ("masks", "mask"), "image": ("images", "image")}


def _key(entry: TreeEntry) -> tuple[tuple[str, ...], str] | None:
    return role_folder_key(entry, _ROLES)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a LUSS phantom tree into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        pairs = collect_pairs(tree.files(lambda e: e.suffix in IMAGE_SUFFIXES), _key)
        if not any("mask" in p for p in pairs.values()):
            raise FileNotFoundError(f"no LUSS label maps under {native_dir}: expected PNGs "
                                    "with a 'masks' folder in their path")
        for key in sorted(pairs, key=lambda k: tuple(natural_key(p) for p in k)):
            split = next((_SPLITS[p.lower()] for p in key[:-1] if p.lower() in _SPLITS), None)
            _convert_pair(pairs[key], split, writer)


def _convert_pair(pair: Pair, split: str | None, writer: CocoWriter) -> None:
    loaded = load_pair(pair.get("image"), pair.get("mask"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    grey = raw if raw.ndim == 2 else raw[..., :3].max(axis=2)
    masks, unknown = split_label_values(grey, _VALUES)
    if unknown:
        writer.warn(mask_entry.path, f"unknown label {format_unknown(unknown)}; "
                                     "expected class codes 1-5")
    add_or_skip(writer, image, masks, mask_entry.path, source=image_entry.path, split=split)


SOURCE = Source(spec=SPEC, convert=convert)
