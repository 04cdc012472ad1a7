"""BUS-BRA: Brazilian breast ultrasound dataset (github wgomezf/BUS-BRA).

Layout (official and shared copy)::

    BUSBRA/Images/bus_NNNN-<side>.png, BUSBRA/Masks/mask_NNNN-<side>.png   (binary masks)
    BUSBRA/bus_data.csv        ID, Case (patient), Histology, Pathology (benign/malignant), ...
    BUSBRA/5-fold-cv.csv       ID, Pathology, kFold, ...

``group`` is the patient (``Case``), ``label`` the pathology. UltraSam holds out fold 1 of the
5-fold file as its test set: ``split`` is ``test`` for fold 1 and ``train`` otherwise (None when
the fold file is missing).

Overlays checked: the images carry calipers (+ marks) and scanner text (e.g. "MAMA ESQUERDA"), left
as they are (they are part of the scans a user holds); the 10 native-sample masks hold one region
each and no text or marks.
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import find_dirs, natural_sorted, relative_source, threshold
from ._tables import read_csv_dicts

STRUCTURE = "breast_lesion"
TEST_FOLD = "1"


def _rows(path: Path, native_dir: Path, writer: CocoWriter) -> dict[str, dict[str, str]]:
    """{ID: row} of a comma-separated table with an ``ID`` column; empty when absent. A row
    that cannot be read is skipped with a warning naming the file and row (:mod:`._tables`)."""
    if not path.is_file():
        return {}
    rows = read_csv_dicts(path, relative_source(path, native_dir), writer.warn)
    return {r["ID"].strip(): r for _, r in rows if r.get("ID", "").strip()}


def _mask_name(image_path: Path) -> str:
    """``bus_0001-l.png`` -> ``mask_0001-l.png``."""
    return f"mask_{image_path.stem[len('bus_'):]}{image_path.suffix}"


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every BUS-BRA image under ``native_dir`` with its lesion mask and metadata."""
    native_dir = Path(native_dir)
    for image_dir in find_dirs(native_dir, "Images"):
        root = image_dir.parent
        mask_dir = root / "Masks"
        if not mask_dir.is_dir():
            continue
        meta = _rows(root / "bus_data.csv", native_dir, writer)
        folds = _rows(root / "5-fold-cv.csv", native_dir, writer)
        pairs = matched_pairs(
            natural_sorted(p for p in image_dir.iterdir()
                           if p.suffix.lower() == ".png" and p.stem.lower().startswith("bus_")),
            lambda image_path, masks=mask_dir: masks / _mask_name(image_path), native_dir, writer,
            orphans=(p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"
                     and p.stem.lower().startswith("mask_")))
        for image_path, source, image, raw in pairs:
            image_id = image_path.stem
            lesion = threshold(raw, 128)
            row = meta.get(image_id, {})
            fold = folds.get(image_id, {}).get("kFold", "").strip()
            split = None if not fold else ("test" if fold == TEST_FOLD else "train")
            pathology = (row.get("Pathology") or folds.get(image_id, {}).get("Pathology") or "")
            case = (row.get("Case") or "").strip() or None
            writer.add_image(image, {STRUCTURE: lesion}, source=source, group=case, split=split,
                             label=pathology.strip().lower() or None,
                             name_parts=(f"p{case}" if case else "",))


SOURCE = Source(
    spec=SourceSpec(
        name="BUS-BRA",
        aliases=("BUSBRA", "BUS_BRA"),
        url="https://github.com/wgomezf/BUS-BRA",
        citation="Gomez-Flores W, Gregorio-Calas MJ, Coelho de Albuquerque Pereira W. BUS-BRA: "
                 "A breast ultrasound dataset for assessing computer-aided diagnosis systems. "
                 "Medical Physics 51(4) (2024) 3110-3123.",
        licence="MIT-style dataset licence (LICENSE.txt); cite the paper",
        anatomy="breast",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="PNG images; binary PNG masks; bus_data.csv; k-fold CSVs",
        real_sample_tests=True,
        notes="group = patient (Case); label = pathology; fold 1 of 5-fold-cv.csv = test",
    ),
    convert=convert,
)
