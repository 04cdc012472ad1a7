"""UPBD (UBPD): ultrasound images of the brachial plexus region with LabelMe polygon labels.

Native layout (folder or archive): ``*.jpg`` images and LabelMe ``*.json`` files, paired by file
stem (copies keep them side by side or in separate folders such as ``JPEGImages/`` and
``json_train/``). Shape labels are pinyin: ``dongmai`` artery, ``jingmai`` vein, ``jirouzuzhi``
muscle, ``shenjing`` nerve, ``zhifang`` fat, ``jizhu`` spine. Polygons, rectangles and circles
are filled; unknown labels, shapes enclosing no area and malformed JSON are warned about,
naming the file, and the rest of the file still converts. JSON text in a Chinese code page
(GB18030) is accepted. No patient id is published: ``group`` is null.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._shapes import decode_image_bytes, labelme_masks, load_json_bytes
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="UPBD",
    aliases=("UBPD", "Ultrasound Brachial Plexus Dataset"),
    url="https://ubpd.worldwidetracing.com:9443/",
    citation="Ultrasound brachial plexus dataset (UBPD), ubpd.worldwidetracing.com (cite as the "
             "site asks).",
    licence="unknown — check upstream",
    anatomy="neck / brachial plexus",
    structures=("artery", "vein", "muscle", "nerve", "fat", "spine"),
    kind="2d",
    native_format="*.jpg + LabelMe *.json polygons; labels in pinyin",
)

#: LabelMe label (pinyin) -> structure.
LABELS = {"dongmai": "artery", "jingmai": "vein", "jirouzuzhi": "muscle", "shenjing": "nerve",
          "zhifang": "fat", "jizhu": "spine"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a UPBD tree into ``writer``; see the module docstring."""
    pairs: dict[str, dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES or e.suffix == ".json"):
            role = "json" if entry.suffix == ".json" else "image"
            slot = pairs.setdefault(entry.stem, {})
            if role in slot:
                writer.warn(entry.path, f"second {role} for stem {entry.stem!r} "
                                        f"(first: {slot[role].path}); ignored")
                continue
            slot[role] = entry
        if not any("json" in p for p in pairs.values()):
            raise FileNotFoundError(f"no UPBD LabelMe files under {native_dir}: expected "
                                    "*.jpg + *.json")
        for stem in sorted(pairs, key=natural_key):
            pair = pairs[stem]
            if "json" not in pair:
                continue  # an image without annotation file: not part of the labelled set
            if "image" not in pair:
                writer.warn(pair["json"].path, "no image with this stem")
                continue
            _convert_pair(pair["image"], pair["json"], writer)


def _convert_pair(image_entry: TreeEntry, json_entry: TreeEntry, writer: CocoWriter) -> None:
    try:
        document = load_json_bytes(json_entry.read_bytes())
    except (ValueError, OSError) as e:
        writer.warn(json_entry.path, f"skipped: {e}")
        return
    try:
        image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
    except (UnreadableFile, OSError) as e:
        writer.warn(image_entry.path, getattr(e, "reason", str(e)))
        return
    h, w = image.shape[:2]
    declared = (document.get("imageHeight"), document.get("imageWidth")) \
        if isinstance(document, dict) else (None, None)
    if None not in declared and tuple(declared) != (h, w):
        writer.warn(json_entry.path, f"declares image size {declared}, image is {(h, w)}; "
                                     "skipped")
        return
    try:
        result = labelme_masks(document, (h, w), LABELS)
    except ValueError as e:
        writer.warn(json_entry.path, f"skipped: {e}")
        return
    if result.unknown_labels:
        writer.warn(json_entry.path, f"unknown label(s) {result.unknown_labels} ignored")
    for reason in result.skipped:
        writer.warn(json_entry.path, reason)
    try:
        writer.add_image(image, result.masks, source=image_entry.path)
    except ValueError as e:
        writer.warn(json_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
