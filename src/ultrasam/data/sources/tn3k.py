"""TN3K: thyroid nodule ultrasound images from the TN3K bundle (TRFE-Net).

Native layout (folder or archive): ``tn3k/{trainval,test}-{image,mask}/NNNN.jpg``. Masks are
JPEG-compressed 0/255 images, so they are thresholded at 128 (compression leaves grey levels
around the edges). The official split is kept: ``trainval`` -> ``train``, ``test`` -> ``test``.
No patient id is published: ``group`` is null.

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
from ._read import IMAGE_SUFFIXES, natural_key, threshold
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="TN3K",
    aliases=("tn3k", "TN-3K"),
    url="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
    citation=("Gong H, Chen J, Chen G, Li H, Li G, Chen F. Thyroid region prior guided attention "
              "for ultrasound segmentation of thyroid nodules. Computers in Biology and Medicine "
              "155:106389 (2023)."),
    licence="unknown — check upstream (released for research use)",
    anatomy="thyroid",
    structures=("thyroid_nodule",),
    kind="2d",
    native_format="tn3k/{trainval,test}-{image,mask}/*.jpg; JPEG masks 0/255 (threshold 128)",
)

_FOLDER = re.compile(r"^(trainval|test)-(image|mask)$", re.IGNORECASE)
_SPLITS = {"trainval": "train", "test": "test"}


def _key(entry: TreeEntry) -> tuple[tuple[str, str, str], str] | None:
    """((prefix, split, stem), role) from the nearest ``<split>-<role>`` folder, or None."""
    parts = entry.parts
    for i in range(len(parts) - 2, -1, -1):
        m = _FOLDER.match(parts[i])
        if m:
            return ("/".join(parts[:i]), m.group(1).lower(), entry.stem), m.group(2).lower()
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a TN3K tree (folder or archives) into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        pairs = collect_pairs(tree.files(lambda e: e.suffix in IMAGE_SUFFIXES), _key)
        if not pairs:
            raise FileNotFoundError(
                f"no TN3K files under {native_dir}: expected tn3k/{{trainval,test}}-"
                "{image,mask}/*.jpg")
        for key in sorted(pairs, key=lambda k: (k[0], k[1], natural_key(k[2]))):
            _convert_pair(pairs[key], _SPLITS[key[1]], writer)


def _convert_pair(pair: Pair, split: str, writer: CocoWriter) -> None:
    loaded = load_pair(pair.get("image"), pair.get("mask"), writer)
    if loaded is None:
        return
    image_entry, mask_entry, image, raw = loaded
    add_or_skip(writer, image, {"thyroid_nodule": threshold(raw, 128)}, mask_entry.path,
                source=image_entry.path, split=split)


SOURCE = Source(spec=SPEC, convert=convert)
