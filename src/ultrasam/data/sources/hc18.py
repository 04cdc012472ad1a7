"""HC18: fetal head circumference challenge (grand-challenge hc18, Zenodo 1327317).

Layout::

    training_set/NNN_HC.png, NNN_kHC.png          (k-th image of subject NNN)
    training_set/NNN_HC_Annotation.png            ellipse OUTLINE (official) or filled ellipse
    training_set_pixel_size_and_HC.csv            filename, pixel size(mm), head circumference(mm)
    test_set/...                                  no annotations: not converted

The official annotations are a thin ellipse outline that must be filled; some copies (the shared
one) are already filled. Both are handled: a filled mask is kept as is; an outline is filled by
hole filling, or, when it is not closed (the ellipse leaves the image), by drawing the ellipse
fitted to its pixels. ``group`` is the subject number ``NNN``; ``spacing_mm`` the CSV pixel size.

Overlays checked: the images carry black anonymisation boxes in their corners, left as they are;
the 7 native-sample annotations are single ellipses with no text or marks.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import read_file_pair, sizes_match, warn_orphans
from ._read import natural_sorted, relative_source, threshold
from ._shapes import fill_holes
from ._tables import read_csv_rows

log = logging.getLogger(__name__)

STRUCTURE = "fetal_head"
_IMAGE = re.compile(r"^(?P<subject>\d+)_(?P<k>\d*)HC$", re.IGNORECASE)
# A mask covering less than this fraction of its fitted ellipse is an outline, not a region.
_OUTLINE_FRACTION = 0.5


def _read_pixel_sizes(native_dir: Path, writer: CocoWriter) -> dict[str, float]:
    """{image file name: pixel size in mm} from every ``*pixel_size*.csv`` under ``native_dir``;
    an unreadable row is skipped with a warning naming the file and row (:mod:`._tables`)."""
    sizes: dict[str, float] = {}
    for path in natural_sorted(native_dir.rglob("*pixel_size*.csv")):
        for _, row in read_csv_rows(path, relative_source(path, native_dir), writer.warn):
            if len(row) >= 2:
                try:
                    sizes[row[0].strip()] = float(row[1])
                except ValueError:  # header row
                    continue
    return sizes


def fill_head(mask: np.ndarray) -> np.ndarray:
    """``H x W`` bool head region from an outline or an already filled ellipse mask."""
    if mask.sum() < 5:
        return mask
    points = np.argwhere(mask)[:, ::-1].astype(np.float32)  # (x, y) for OpenCV
    ellipse = np.zeros(mask.shape, np.uint8)
    cv2.ellipse(ellipse, cv2.fitEllipse(points), 1, thickness=-1)
    ellipse_area = max(int(ellipse.sum()), 1)
    if mask.sum() >= _OUTLINE_FRACTION * ellipse_area:
        return mask  # already a filled region: keep the expert's pixels
    filled = fill_holes(mask)
    if filled.sum() >= _OUTLINE_FRACTION * ellipse_area:
        return filled
    # Outline open at the image border: fill holes cannot close it, the fitted ellipse can.
    return ellipse.astype(bool) | mask


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every annotated HC18 image under ``native_dir`` with its filled head mask."""
    native_dir = Path(native_dir)
    sizes = _read_pixel_sizes(native_dir, writer)
    unannotated = 0
    pngs = [p for p in native_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".png"]
    claimed: set[Path] = set()
    for image_path in natural_sorted(p for p in pngs if _IMAGE.match(p.stem)):
        source = relative_source(image_path, native_dir)
        mask_path = image_path.with_name(f"{image_path.stem}_Annotation{image_path.suffix}")
        claimed.add(mask_path)
        if not mask_path.is_file():
            if "test" in image_path.parent.name.lower():
                unannotated += 1  # the challenge's hidden test set: nothing to convert
            else:
                writer.warn(source, "no annotation file; image skipped")
            continue
        read = read_file_pair(image_path, mask_path, native_dir, writer)
        if read is None or not sizes_match(*read, source, writer, what="annotation"):
            continue
        image, outline = read[0], threshold(read[1], 128)
        ps = sizes.get(image_path.name)
        subject = _IMAGE.match(image_path.stem)["subject"]  # type: ignore[index]
        writer.add_image(image, {STRUCTURE: fill_head(outline)}, source=source, group=subject,
                         spacing_mm=(ps, ps) if ps else None)
    warn_orphans((p for p in pngs if p.stem.endswith("_Annotation")
                  and _IMAGE.match(p.stem[:-len("_Annotation")])),
                 claimed, native_dir, writer, what="annotation")
    if unannotated:
        log.info("HC18: %d test-set images without annotation not converted", unannotated)


SOURCE = Source(
    spec=SourceSpec(
        name="HC",
        aliases=("HC18", "HC-18"),
        url="https://hc18.grand-challenge.org/",
        citation="van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated "
                 "measurement of fetal head circumference using 2D ultrasound images. PLoS ONE "
                 "13(8) (2018) e0200412. Data: Zenodo 10.5281/zenodo.1327317.",
        licence="CC-BY-4.0",
        anatomy="fetal head",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="PNG images; PNG ellipse outline annotations; pixel-size CSV",
        real_sample_tests=True,
        notes="outlines filled; group = subject; pixel spacing from the CSV",
    ),
    convert=convert,
)
