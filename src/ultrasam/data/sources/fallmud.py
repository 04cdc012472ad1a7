"""FALLMUD: fascicle and aponeurosis segmentation in lower-leg muscle ultrasound (CEA Kalisteo).

Native layout: ``{NeilCronin,RyanCunningham}/{images,aponeurosis_masks,fascicle_masks}/`` with the
same file stem in each folder. Both mask kinds are converted (the UltraSam reference dropped the
fascicles). Some masks are stored rotated by 90 degrees (their height and width swapped relative
to the image): they are rotated back clockwise (``np.rot90(mask, -1)``), with a warning naming
the file; the direction is an assumption to check on the real release. The sub-collection name
is kept in the file name; no subject id is published, so ``group`` is none.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask, read_entry_image, read_entry_mask
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._tree import NativeTree, TreeEntry

MASK_FOLDERS = {"aponeurosis_masks": "aponeurosis", "fascicle_masks": "muscle_fascicle"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Each image with its aponeurosis and fascicle masks (either may be missing)."""
    images: dict[tuple[str, str], TreeEntry] = {}
    masks: dict[tuple[str, str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES and len(e.parts) >= 2):
            folder, base = e.parts[-2].lower(), "/".join(e.parts[:-2])
            if folder == "images":
                images[(base, e.stem)] = e
            elif folder in MASK_FOLDERS:
                masks[(base, e.stem, MASK_FOLDERS[folder])] = e
        for key in sorted(images, key=lambda k: natural_key("/".join(k))):
            img_e = images[key]
            found = {s: masks[(*key, s)] for s in MASK_FOLDERS.values() if (*key, s) in masks}
            if not found:
                writer.warn(img_e.path, "no aponeurosis or fascicle mask; skipped")
                continue
            try:
                image = read_entry_image(img_e)
                structures: dict[str, np.ndarray] = {}
                for structure, mask_e in found.items():
                    mask = binary_mask(read_entry_mask(mask_e))
                    if mask.shape != image.shape[:2] and mask.shape[::-1] == image.shape[:2]:
                        writer.warn(mask_e.path, "mask stored rotated by 90 degrees; rotated "
                                                 "back clockwise")
                        mask = np.ascontiguousarray(np.rot90(mask, -1))
                    structures[structure] = mask
            except UnreadableFile as e:
                writer.warn(str(e.path), e.reason)
                continue
            collection = key[0].rsplit("/", 1)[-1]
            add_or_warn(writer, image, structures, img_e.path, name_parts=(collection,))


SOURCE = Source(
    spec=SourceSpec(
        name="FALLMUD",
        aliases=("FALLMUD muscle",),
        url="https://kalisteo.cea.fr/index.php/fallmud/",
        citation="Michard et al., AW-Net: automatic muscle structure analysis on B-mode "
                 "ultrasound images for injury prevention, ACM BCB 2021 (FALLMUD dataset)",
        licence="unknown — check upstream",
        anatomy="lower-leg muscle",
        structures=("aponeurosis", "muscle_fascicle"),
        kind="2d",
        native_format="{NeilCronin,RyanCunningham}/{images,aponeurosis_masks,fascicle_masks}/; "
                      "some masks rotated 90 degrees",
    ),
    convert=convert,
)
