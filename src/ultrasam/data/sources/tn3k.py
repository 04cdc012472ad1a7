"""TN3K: thyroid nodule ultrasound images from the TN3K bundle (TRFE-Net).

Native layout (folder or archive): ``tn3k/{trainval,test}-{image,mask}/NNNN.jpg``. Masks are
JPEG-compressed 0/255 images, so they are thresholded at 128 (compression leaves grey levels
around the edges). The official split is kept: ``trainval`` -> ``train``, ``test`` -> ``test``.
No patient id is published: ``group`` is null.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key, threshold
from ._shapes import decode_image_bytes, decode_mask_bytes
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


def _role(entry: TreeEntry) -> tuple[str, str, str] | None:
    """(prefix, split, role) from the nearest ``<split>-<role>`` folder, or None."""
    parts = entry.parts
    for i in range(len(parts) - 2, -1, -1):
        m = _FOLDER.match(parts[i])
        if m:
            return "/".join(parts[:i]), m.group(1).lower(), m.group(2).lower()
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a TN3K tree (folder or archives) into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, str, str], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            role = _role(entry)
            if role is None:
                continue
            prefix, split, kind = role
            pairs.setdefault((prefix, split, entry.stem), {})[kind] = entry
        if not pairs:
            raise FileNotFoundError(
                f"no TN3K files under {native_dir}: expected tn3k/{{trainval,test}}-"
                "{image,mask}/*.jpg")
        for key in sorted(pairs, key=lambda k: (k[0], k[1], natural_key(k[2]))):
            _convert_pair(pairs[key], _SPLITS[key[1]], writer)


def _convert_pair(pair: dict[str, TreeEntry], split: str, writer: CocoWriter) -> None:
    image_entry, mask_entry = pair.get("image"), pair.get("mask")
    if image_entry is None or mask_entry is None:
        present = image_entry or mask_entry
        assert present is not None  # a pair holds at least the entry that created it
        writer.warn(present.path, "no matching " + ("mask" if mask_entry is None else "image"))
        return
    try:
        image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
        mask = threshold(decode_mask_bytes(mask_entry.read_bytes(), mask_entry.path), 128)
    except (UnreadableFile, OSError) as e:
        writer.warn(str(getattr(e, "path", image_entry.path)), getattr(e, "reason", str(e)))
        return
    try:
        writer.add_image(image, {"thyroid_nodule": mask}, source=image_entry.path, split=split)
    except ValueError as e:
        writer.warn(mask_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
