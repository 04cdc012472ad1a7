"""DDTI: Digital Database Thyroid Image (Pedraza et al., CIM@LAB), thyroid nodules.

Official preprocessed layout (TN3K bundle / Kaggle DDTI)::

    p_image/<case>_<img>.PNG, p_mask/<case>_<img>.PNG        255 = nodule

Shared copy (a cropped derivative, one 300 x 300 crop per nodule)::

    cropped/<case>_<img>[(<nodule>)].png, mask/<same>.gif, diagnosis.csv (no header: id, TI-RADS)

``group`` is the case number (all images and crops of a case stay together); the TI-RADS score,
where ``diagnosis.csv`` gives one, is stored as ``tirads``. Crops whose mask is empty are kept.

Overlays checked: the crops carry small scanner markers at their edges, left as they are; the 10
native-sample masks hold one region each and no text or marks.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import IMAGE_SUFFIXES, find_dirs, natural_sorted, relative_source, threshold
from ._tables import read_csv_rows

STRUCTURE = "thyroid_nodule"
_CASE = re.compile(r"^(?P<case>\d+)_")
# (image folder, mask folder): official first, then the cropped derivative.
_LAYOUTS = (("p_image", "p_mask"), ("cropped", "mask"))


def _read_tirads(native_dir: Path, writer: CocoWriter) -> dict[str, str]:
    """{image id: TI-RADS} from every ``diagnosis.csv`` under ``native_dir`` (blanks dropped);
    an unreadable row is skipped with a warning naming the file and row."""
    out: dict[str, str] = {}
    for path in natural_sorted(native_dir.rglob("diagnosis.csv")):
        for _, row in read_csv_rows(path, relative_source(path, native_dir), writer.warn):
            if len(row) >= 2 and row[0].strip() and row[1].strip():
                out[row[0].strip()] = row[1].strip()
    return out


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every DDTI image (or crop) under ``native_dir`` with its nodule mask."""
    native_dir = Path(native_dir)
    tirads = _read_tirads(native_dir, writer)
    for image_name, mask_name in _LAYOUTS:
        for image_dir in find_dirs(native_dir, image_name):
            mask_dir = image_dir.parent / mask_name
            if not mask_dir.is_dir():
                continue
            masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            pairs = matched_pairs(
                natural_sorted(p for p in image_dir.iterdir()
                               if p.suffix.lower() in IMAGE_SUFFIXES),
                lambda image_path, by_stem=masks: by_stem.get(image_path.stem), native_dir,
                writer, orphans=masks.values())
            for image_path, source, image, raw in pairs:
                nodule = threshold(raw, 128)
                m = _CASE.match(image_path.stem)
                score = tirads.get(image_path.stem)
                writer.add_image(image, {STRUCTURE: nodule}, source=source,
                                 group=m["case"] if m else None,
                                 name_parts=(f"c{m['case']}" if m else "",),
                                 extra={"tirads": score} if score else None)


SOURCE = Source(
    spec=SourceSpec(
        name="DDTI",
        aliases=("Digital Database Thyroid Image", "DDTI thyroid"),
        url="http://cimalab.unal.edu.co/?lang=en&mod=project&id=31",
        citation="Pedraza L, Vargas C, Narvaez F, et al. An open access thyroid ultrasound image "
                 "database. Proc. SPIE 9287, 10th International Symposium on Medical Information "
                 "Processing and Analysis (2015) 92870W.",
        licence="open database; cite the paper",
        anatomy="thyroid",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="PNG images + PNG masks (p_image/p_mask), or cropped PNG + GIF masks",
        real_sample_tests=True,
        notes="group = case number; TI-RADS kept as 'tirads' where known",
    ),
    convert=convert,
)
