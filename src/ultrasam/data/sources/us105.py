"""105US: 100 breast ultrasound images with tumour masks (ResearchGate release).

Native layout: PNG files anywhere under the root; masks are the PNGs with ``Masks`` in their path
(case-insensitive), images the others; an image and its mask share the leading integer of their
file names (``12.png`` <-> ``Masks/12_mask.png``). Masks are grey, 255 = tumour (thresholded at
128 so anti-aliased edges do not split the lesion).

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask
from ._pairs import read_entry_pair
from ._tree import NativeTree, TreeEntry

_LEADING_INT = re.compile(r"^\D*?(\d+)")


def _key(entry: TreeEntry) -> int | None:
    m = _LEADING_INT.match(entry.stem)
    return int(m.group(1)) if m else None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Pair every image with its mask by leading integer; unpaired files are warned about."""
    images: dict[int, TreeEntry] = {}
    masks: dict[int, TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".png"):
            target = masks if "masks" in e.path.lower() else images
            key = _key(e)
            if key is None:
                writer.warn(e.path, "no leading integer in the file name; skipped")
            elif key in target:
                writer.warn(e.path, f"number {key} already used by {target[key].path}; skipped")
            else:
                target[key] = e
        for key in sorted(images):
            img_e = images[key]
            if key not in masks:
                writer.warn(img_e.path, "no mask with the same number; skipped")
                continue
            read = read_entry_pair(img_e, masks[key], writer)
            if read is None:
                continue
            image, mask = read[0], binary_mask(read[1])
            add_or_warn(writer, image, {"breast_lesion": mask}, img_e.path)
        for key in sorted(set(masks) - set(images)):
            writer.warn(masks[key].path, "mask without an image; skipped")


SOURCE = Source(
    spec=SourceSpec(
        name="105US",
        aliases=("US105", "105 US"),
        url="https://www.researchgate.net/ ('100 2D US images and tumor segmentation masks')",
        citation="100 2D US images and tumor segmentation masks (105US), ResearchGate dataset "
                 "release; cited by UltraSam (Meyer et al., 2024) as 105US",
        licence="unknown — check upstream",
        anatomy="breast",
        structures=("breast_lesion",),
        kind="2d",
        native_format="PNG images; PNG masks under a 'Masks' path, paired by leading integer; "
                      "255 = tumour",
    ),
    convert=convert,
)
