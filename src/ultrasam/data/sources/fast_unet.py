"""Fast-U-Net: fetal abdominal- and head-circumference images with masks (GitHub release).

Published only as RAR archives (AC and HC). RAR members are read through an external ``unrar``
(see :mod:`._tree`); without it each archive is warned about, and when nothing else is left to
convert a ``RuntimeError`` explains how to proceed (install unrar, or extract and convert the
extracted folder). Extracted layout: files under a path naming the task, ``AC`` (or ``*_AC*``)
or ``HC``, in image and mask folders; masks are the files with ``mask``, ``label`` or
``annotation`` in their path, paired with the image of the same stem (mask tokens removed).
AC masks are ``fetal_abdomen``, HC masks ``fetal_head``; outline-only masks (HC18 style
ellipses) are hole-filled, which leaves filled masks unchanged.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import MissingToolError
from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask
from ._pairs import read_entry_pair
from ._read import IMAGE_SUFFIXES, natural_key
from ._shapes import fill_holes
from ._tree import NativeTree, TreeEntry, rar_unavailable_message

TASKS = {"ac": "fetal_abdomen", "hc": "fetal_head"}
_TASK = re.compile(r"(?:^|[^a-z])(ac|hc)(?:[^a-z]|$)")
_MASK = re.compile(r"mask|label|annotation", re.IGNORECASE)
_MASK_TOKEN = re.compile(r"[_\- ]*(mask|label|annotation)[_\- ]*", re.IGNORECASE)


def _task(e: TreeEntry) -> str | None:
    for part in reversed(e.parts[:-1]):
        m = _TASK.search(part.lower())
        if m:
            return m.group(1)
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """AC and HC images paired with their masks; RAR archives need ``unrar``."""
    images: dict[tuple[str, str], TreeEntry] = {}
    masks: dict[tuple[str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            task = _task(e)
            if task is None:
                writer.warn(e.path, "path names neither AC nor HC; skipped")
                continue
            is_mask = bool(_MASK.search(e.path))
            key = (task, _MASK_TOKEN.sub("", e.stem).lower() if is_mask else e.stem.lower())
            (masks if is_mask else images)[key] = e
        rars = [u.path for u in tree.unreadable if "RAR archive" in u.reason]
        if not images and rars:
            raise MissingToolError(rar_unavailable_message(", ".join(rars)))
        for key in sorted(images, key=lambda k: (k[0], natural_key(k[1]))):
            img_e = images[key]
            if key not in masks:
                writer.warn(img_e.path, "no mask with the same name; skipped")
                continue
            read = read_entry_pair(img_e, masks[key], writer)
            if read is None:
                continue
            image, mask = read[0], fill_holes(binary_mask(read[1]))
            add_or_warn(writer, image, {TASKS[key[0]]: mask}, img_e.path,
                        name_parts=(key[0].upper(),))


SOURCE = Source(
    spec=SourceSpec(
        name="Fast-U-Net",
        aliases=("FastUNet", "Fast_U_Net"),
        url="https://github.com/vahidashkani/Fast-U-Net",
        citation="Ashkani Chenarlogh et al., Fast and accurate U-Net model for fetal ultrasound "
                 "image segmentation, Ultrasonic Imaging 44(1) (2022)",
        licence="unknown — check upstream",
        anatomy="fetal abdomen and head",
        structures=("fetal_abdomen", "fetal_head"),
        kind="2d",
        native_format=".rar archives of AC / HC images and masks (read via unrar, or extracted)",
        notes="RAR needs the external 'unrar' program; the extracted layout converts without it",
    ),
    convert=convert,
)
