"""S1: breast ultrasound images with benign / malignant lesion masks (PMC8205136 data).

Native layout (folder or archive): ``Data/{TrainingDataSet,TestingDataSet}/...`` holding JPEG or
PNG images; masks are the files with a ``Labels`` folder in their path, paired with the image
of the same stem in the same split. Mask grey value 127 = benign lesion, 255 = malignant
lesion; the structure is ``breast_lesion`` and the class goes to the image ``label``. Other
non-zero values are warned about (naming the file) and ignored. JPEG-compressed masks are first
snapped to 0 / 127 / 255 (nearest level), since compression blurs the exact codes. Masks under
a ``General`` folder inside ``Labels`` are skipped (the UltraSam reference skipped them too; they
are not lesion-class masks). Split: ``TrainingDataSet`` -> train, ``TestingDataSet`` -> test.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import Pair, add_or_skip, load_pair
from ._read import IMAGE_SUFFIXES, natural_key
from ._shapes import format_unknown, split_label_values
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="S1",
    aliases=("S1-breast",),
    url="https://www.ncbi.nlm.nih.gov/pmc/articles/PMC8205136/",
    citation="Breast ultrasound dataset published with the article PMC8205136 (PubMed Central).",
    licence="unknown — check upstream",
    anatomy="breast",
    structures=("breast_lesion",),
    kind="2d",
    native_format=("Data/{TrainingDataSet,TestingDataSet}/... jpg/png; masks have 'Labels' in "
                   "the path; 127 benign, 255 malignant"),
)

_SPLITS = {"trainingdataset": "train", "testingdataset": "test"}
_VALUES = {127: "benign", 255: "malignant"}


def _split_of(entry: TreeEntry) -> tuple[str, str] | None:
    """(prefix up to the split folder, split) or None when no split folder is in the path."""
    for i, part in enumerate(entry.parts[:-1]):
        split = _SPLITS.get(part.lower())
        if split is not None:
            return "/".join(entry.parts[: i + 1]), split
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert an S1 tree into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, str], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            where = _split_of(entry)
            if where is None:
                continue
            folders = [p.lower() for p in entry.parts[:-1]]
            if "labels" in folders:
                if "general" in folders[folders.index("labels"):]:
                    continue
                role = "mask"
            else:
                role = "image"
            slot = pairs.setdefault((where[0], entry.stem), {})
            if role in slot:
                writer.warn(entry.path, f"second {role} for stem {entry.stem!r} "
                                        f"(first: {slot[role].path}); ignored")
                continue
            slot[role] = entry
        if not pairs:
            raise FileNotFoundError(f"no S1 files under {native_dir}: expected "
                                    "Data/{TrainingDataSet,TestingDataSet}/...")
        for key in sorted(pairs, key=lambda k: (k[0], natural_key(k[1]))):
            split = _SPLITS[key[0].rsplit("/", 1)[-1].lower()]
            _convert_pair(pairs[key], split, writer)


def _snap_levels(mask: np.ndarray) -> np.ndarray:
    """JPEG mask -> the nearest of the levels 0, 127, 255."""
    levels = np.array([0, 127, 255], np.int16)
    idx = np.abs(mask.astype(np.int16)[..., None] - levels).argmin(axis=-1)
    return levels[idx].astype(np.uint8)


def _convert_pair(pair: Pair, split: str, writer: CocoWriter) -> None:
    loaded = load_pair(pair.get("image"), pair.get("mask"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    grey = raw if raw.ndim == 2 else raw[..., :3].max(axis=2)
    if mask_entry.suffix in (".jpg", ".jpeg"):
        grey = _snap_levels(grey)
    classes, unknown = split_label_values(grey, _VALUES)
    if unknown:
        writer.warn(mask_entry.path, f"unexpected mask {format_unknown(unknown)}; "
                                     "expected 127 (benign) or 255 (malignant)")
    label = None
    if len(classes) == 1:
        label = next(iter(classes))
    elif len(classes) == 2:
        writer.warn(mask_entry.path, "mask holds both benign and malignant values; "
                                     "image label left empty")
    lesion = np.zeros(grey.shape, bool)
    for m in classes.values():
        lesion |= m
    add_or_skip(writer, image, {"breast_lesion": lesion}, mask_entry.path,
                source=image_entry.path, split=split, label=label)


SOURCE = Source(spec=SPEC, convert=convert)
