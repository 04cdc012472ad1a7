"""Kaggle Ultrasound Nerve Segmentation (2016): brachial plexus in neck ultrasound.

Layout: official ``train/<subject>_<n>.tif`` + ``train/<subject>_<n>_mask.tif`` (``test/`` has no
masks and is not converted); the shared copy (a 55-image subset) nests it as ``data/train/``.
Masks are 0/255; many are empty (no nerve visible) and are kept as negatives. ``group`` is the
subject number, so that frames of one subject stay on one side of a split.

Overlays checked: the frames carry a small triangle marker at the top, left as it is; the native-
sample masks hold the nerve region only, no text or marks.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import read_file_pair, sizes_match, warn_orphans
from ._read import natural_sorted, relative_source, threshold

log = logging.getLogger(__name__)

STRUCTURE = "brachial_plexus"
_IMAGE = re.compile(r"^(?P<subject>\d+)_(?P<n>\d+)$")


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every ``<subject>_<n>.tif`` that has a ``_mask.tif`` under ``native_dir``."""
    native_dir = Path(native_dir)
    unannotated = 0
    tifs = [p for p in native_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in (".tif", ".tiff")]
    claimed: set[Path] = set()
    for image_path in natural_sorted(p for p in tifs if _IMAGE.match(p.stem)):
        source = relative_source(image_path, native_dir)
        mask_path = image_path.with_name(f"{image_path.stem}_mask{image_path.suffix}")
        claimed.add(mask_path)
        if not mask_path.is_file():
            unannotated += 1  # the competition's test images carry no mask
            continue
        read = read_file_pair(image_path, mask_path, native_dir, writer)
        if read is None or not sizes_match(*read, source, writer):
            continue
        image, nerve = read[0], threshold(read[1], 128)
        subject = _IMAGE.match(image_path.stem)["subject"]  # type: ignore[index]
        writer.add_image(image, {STRUCTURE: nerve}, source=source, group=subject,
                         name_parts=(f"s{subject}",))
    warn_orphans((p for p in tifs if p.stem.endswith("_mask") and _IMAGE.match(p.stem[:-5])),
                 claimed, native_dir, writer)
    if unannotated:
        log.info("NERVE: %d images without a mask file (test set) not converted", unannotated)


SOURCE = Source(
    spec=SourceSpec(
        name="NERVE",
        aliases=("US nerve segmentation", "nerve", "ultrasound-nerve-segmentation",
                 "Kaggle nerve"),
        url="https://www.kaggle.com/c/ultrasound-nerve-segmentation",
        citation="Kaggle Ultrasound Nerve Segmentation challenge (2016), "
                 "https://www.kaggle.com/c/ultrasound-nerve-segmentation.",
        licence="Kaggle competition rules (non-commercial research)",
        anatomy="neck / brachial plexus",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="TIFF images and 0/255 TIFF masks (<subject>_<n>[_mask].tif)",
        real_sample_tests=True,
        notes="group = subject; empty masks kept as negatives",
    ),
    convert=convert,
)
