"""BUS-UCLM: breast ultrasound lesion segmentation (Mendeley 7fvgj4jsp7).

Layout (official release and the shared copy, which nests it under wrapper folders)::

    .../BUS-UCLM/images/<CODE>_NNN.png
                /masks/<CODE>_NNN.png     RGB: green = benign lesion, red = malignant lesion
                /INFO.csv                 ';'-separated, UTF-8 with BOM: Image;Resolution;Label;...

``<CODE>`` is the patient code, used as ``group``. The image label comes from ``INFO.csv`` when
it lists the image, else from the mask colour (no lesion -> normal). Pairs whose image and mask
sizes disagree (e.g. ``HESN_000``, an RGBA screenshot of another size) are skipped with a warning.

Overlays checked: the images carry a small probe icon in a bottom corner, left as it is; the
native-sample masks hold one coloured region per lesion and no text or marks.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import find_dirs, natural_sorted, relative_source, threshold
from ._tables import read_csv_dicts

STRUCTURE = "breast_lesion"
_PATIENT = re.compile(r"^([A-Za-z]+)_\d+$")


def _read_info(folder: Path, native_dir: Path, writer: CocoWriter) -> dict[str, str]:
    """``INFO.csv`` as {image file name: lower-case label}; empty when absent. A row that cannot
    be read is skipped with a warning naming the file and row (:mod:`._tables`)."""
    path = folder / "INFO.csv"
    if not path.is_file():
        return {}
    rows = read_csv_dicts(path, relative_source(path, native_dir), writer.warn, delimiter=";")
    return {r["Image"].strip(): r["Label"].strip().lower()
            for _, r in rows if r.get("Image", "").strip() and r.get("Label", "").strip()}


def _colour_label(mask: np.ndarray) -> str:
    """benign (green), malignant (red) or normal (no lesion) from an RGB(A) mask; a grey mask
    with a lesion gives "lesion" (colour unknown: the label must come from INFO.csv)."""
    if mask.ndim == 2:
        return "normal" if not (mask > 0).any() else "lesion"
    red = int(np.count_nonzero(mask[..., 0] >= 128))
    green = int(np.count_nonzero(mask[..., 1] >= 128))
    if red == 0 and green == 0:
        return "normal"
    return "malignant" if red >= green else "benign"


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every image of every ``images/`` + ``masks/`` pair of folders under ``native_dir``."""
    native_dir = Path(native_dir)
    for images_dir in find_dirs(native_dir, "images"):
        masks_dir = images_dir.parent / "masks"
        if not masks_dir.is_dir():
            continue
        info = _read_info(images_dir.parent, native_dir, writer)
        pairs = matched_pairs(
            natural_sorted(p for p in images_dir.iterdir() if p.suffix.lower() == ".png"),
            lambda image_path, masks=masks_dir: masks / image_path.name, native_dir, writer,
            orphans=(p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"))
        for image_path, source, image, raw in pairs:
            lesion = threshold(raw, 128)
            colour = _colour_label(raw)
            label = info.get(image_path.name, colour if colour != "lesion" else None)
            if colour not in ("lesion", label):
                writer.warn(source, f"INFO.csv says {label!r}, mask colour says {colour!r}; "
                                    "INFO.csv kept")
            m = _PATIENT.match(image_path.stem)
            writer.add_image(image, {STRUCTURE: lesion}, source=source,
                             group=m[1] if m else None, label=label,
                             name_parts=(m[1] if m else "",))


SOURCE = Source(
    spec=SourceSpec(
        name="BUS_UCLM",
        aliases=("BUS-UCLM", "BUS_UCML", "BUS-UCML", "BUSUCLM"),
        url="https://data.mendeley.com/datasets/7fvgj4jsp7",
        citation="Vallez N, Bueno G, Deniz O, et al. BUS-UCLM: Breast ultrasound lesion "
                 "segmentation dataset. Mendeley Data (2024), doi:10.17632/7fvgj4jsp7.",
        licence="CC-BY-4.0",
        anatomy="breast",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="PNG images; RGB PNG masks (green benign, red malignant); INFO.csv",
        real_sample_tests=True,
        notes="group = patient code; label from INFO.csv or mask colour; size-mismatched pairs "
              "skipped",
    ),
    convert=convert,
)
