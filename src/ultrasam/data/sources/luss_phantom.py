"""LUSS_phantom: lung ultrasound phantom images with artefact / anatomy masks (Leeds 1263).

Native layout (folder or archive): PNG images and PNG label maps; a label map has a ``masks``
folder in its path and pairs with the image of the same stem whose path has ``images`` in that
place (e.g. ``data/{train,test}/{images,masks}/<id>.png``). The grey value of a mask pixel is its
class: 1 rib, 2 pleural line, 3 A-line, 4 B-line, 5 B-line confluence (the order the dataset
lists its classes; any other non-zero value is warned about and ignored). A ``train`` / ``test``
folder in the path gives the split. Phantom recordings carry no subject id: ``group`` is null.
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._shapes import decode_image_bytes, decode_mask_bytes, format_unknown, split_label_values
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


def _key(entry: TreeEntry) -> tuple[tuple[str, ...], str] | None:
    folders = [p.lower() for p in entry.parts[:-1]]
    for role, names in (("mask", ("masks", "mask")), ("image", ("images", "image"))):
        for i in range(len(folders) - 1, -1, -1):
            if folders[i] in names:
                rest = tuple(entry.parts[:i]) + tuple(entry.parts[i + 1:-1]) + (entry.stem,)
                return rest, role
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a LUSS phantom tree into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, ...], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            found = _key(entry)
            if found is not None:
                pairs.setdefault(found[0], {})[found[1]] = entry
        if not any("mask" in p for p in pairs.values()):
            raise FileNotFoundError(f"no LUSS label maps under {native_dir}: expected PNGs "
                                    "with a 'masks' folder in their path")
        for key in sorted(pairs, key=lambda k: tuple(natural_key(p) for p in k)):
            split = next((_SPLITS[p.lower()] for p in key[:-1] if p.lower() in _SPLITS), None)
            _convert_pair(pairs[key], split, writer)


def _convert_pair(pair: dict[str, TreeEntry], split: str | None, writer: CocoWriter) -> None:
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
    grey = raw if raw.ndim == 2 else raw[..., :3].max(axis=2)
    masks, unknown = split_label_values(grey, _VALUES)
    if unknown:
        writer.warn(mask_entry.path, f"unknown label {format_unknown(unknown)}; "
                                     "expected class codes 1-5")
    try:
        writer.add_image(image, masks, source=image_entry.path, split=split)
    except ValueError as e:
        writer.warn(mask_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
