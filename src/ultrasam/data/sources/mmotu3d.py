"""MMOTU_3d: ovarian tumour masks on 3D ultrasound renderings (the OTU_3d part of MMOTU).

Native layout (folder or archive): ``images/<id>.JPG`` and ``annotations/<id>.PNG`` (a colour
per class; some copies add ``<id>_binary.PNG``, used only when the colour map is missing).
Any non-zero channel is lesion (structure ``ovarian_tumor``). Optional list files
``*train*.txt`` / ``*val*.txt`` / ``*test*.txt`` next to the folders give the split; lines are
``<id>[.JPG] [class index]`` and the class index, when present, becomes the image ``label``
(kept as published, e.g. ``"3"``). No patient id: ``group`` is null.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import Pair, add_or_skip, collect_pairs, load_pair
from ._read import IMAGE_SUFFIXES, natural_key, nonzero
from ._tables import read_text_lines
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="MMOTU_3d",
    aliases=("MMOTU-3D", "MMOTU3D", "OTU_3d"),
    url="https://github.com/cv516Buaa/MMOTU_DS2Net",
    citation=("Zhao Q, Lyu S, Bai W, et al. A Multi-Modality Ovarian Tumor Ultrasound Image "
              "Dataset for Unsupervised Cross-Domain Semantic Segmentation. arXiv:2207.06799 "
              "(2022)."),
    licence="unknown — check upstream (released for research use; cite)",
    anatomy="ovary",
    structures=("ovarian_tumor",),
    kind="2d",
    native_format="images/*.JPG + annotations/*.PNG (colour per class; non-zero = lesion)",
)

_ROLES = {"images": "image", "annotations": "mask"}
_SPLIT_FILE = re.compile(r"(train|val|test)", re.IGNORECASE)
_SPLITS = {"train": "train", "val": "val", "test": "test"}


def _key(entry: TreeEntry) -> tuple[tuple[str, str], str] | None:
    """((folder above images/annotations, stem), role) or None; ``<stem>_binary`` masks get the
    role ``binary``."""
    if entry.suffix not in IMAGE_SUFFIXES or len(entry.parts) < 2:
        return None
    role = _ROLES.get(entry.parts[-2].lower())
    if role is None:
        return None
    stem = entry.stem
    if role == "mask" and stem.lower().endswith("_binary"):
        stem, role = stem[: -len("_binary")], "binary"
    return ("/".join(entry.parts[:-2]), stem), role


def _read_split_lists(entries: list[TreeEntry], writer: CocoWriter
                      ) -> dict[str, tuple[str, str | None]]:
    """stem -> (split, label or None) from the list files."""
    out: dict[str, tuple[str, str | None]] = {}
    for entry in entries:
        m = _SPLIT_FILE.search(entry.stem)
        if m is None:
            continue
        split = _SPLITS[m.group(1).lower()]
        try:
            data = entry.read_bytes()
        except OSError as e:
            writer.warn(entry.path, f"unreadable split list: {e}; file skipped")
            continue
        for _, line in read_text_lines(data, entry.path, writer.warn):
            tokens = line.split()
            if not tokens:
                continue
            stem = Path(tokens[0]).stem
            out[stem] = (split, tokens[1] if len(tokens) > 1 else None)
    return out


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert an MMOTU OTU_3d tree into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        lists = _read_split_lists([e for e in entries if e.suffix == ".txt"], writer)
        pairs = collect_pairs(entries, _key)
        if not pairs:
            raise FileNotFoundError(f"no MMOTU_3d files under {native_dir}: expected "
                                    "images/*.JPG and annotations/*.PNG")
        for key in sorted(pairs, key=lambda k: (k[0], natural_key(k[1]))):
            split, label = lists.get(key[1], (None, None))
            _convert_pair(pairs[key], split, label, writer)


def _convert_pair(pair: Pair, split: str | None, label: str | None,
                  writer: CocoWriter) -> None:
    # The colour annotation is preferred; the ``*_binary`` export stands in when it is missing.
    loaded = load_pair(pair.get("image"), pair.get("mask") or pair.get("binary"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    add_or_skip(writer, image, {"ovarian_tumor": nonzero(raw)}, mask_entry.path,
                source=image_entry.path, split=split, label=label)


SOURCE = Source(spec=SPEC, convert=convert)
