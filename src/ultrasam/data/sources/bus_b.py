"""BUS Dataset B (Yap et al., Manchester Metropolitan University).

Native layout: ``original/*.png`` scans and ``GT/*.png`` masks with the same file names; a mask
pixel is lesion when its grey value is >= 150.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn
from ._pairs import read_entry_pair
from ._read import natural_key, threshold
from ._tree import NativeTree, TreeEntry


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """``original/x.png`` paired with ``GT/x.png``."""
    images: dict[tuple[str, str], TreeEntry] = {}
    masks: dict[tuple[str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".png" and len(e.parts) >= 2):
            folder = e.parts[-2].lower()
            key = ("/".join(e.parts[:-2]), e.stem)
            if folder == "original":
                images[key] = e
            elif folder == "gt":
                masks[key] = e
        for key in sorted(images, key=lambda k: natural_key("/".join(k))):
            img_e = images[key]
            if key not in masks:
                writer.warn(img_e.path, "no GT mask with the same name; skipped")
                continue
            read = read_entry_pair(img_e, masks[key], writer)
            if read is None:
                continue
            image, mask = read[0], threshold(read[1], 150)
            add_or_warn(writer, image, {"breast_lesion": mask}, img_e.path)


SOURCE = Source(
    spec=SourceSpec(
        name="BUS-B",
        aliases=("BUS Dataset B", "BUS_B", "BUS (Dataset B)", "DatasetB"),
        url="http://www2.docm.mmu.ac.uk/STAFF/m.yap/dataset.php",
        citation="Yap et al., Automated breast ultrasound lesions detection using convolutional "
                 "neural networks, IEEE JBHI 22(4) (2018)",
        licence="research use on request (as published) — check upstream",
        anatomy="breast",
        structures=("breast_lesion",),
        kind="2d",
        native_format="original/*.png + GT/*.png (same names); grey >= 150 = lesion",
    ),
    convert=convert,
)
