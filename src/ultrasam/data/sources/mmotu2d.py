"""MMOTU-2D: multi-modality ovarian tumour ultrasound, 2D B-mode part (OTU_2d).

Official layout (github cv516Buaa/MMOTU_DS2Net)::

    OTU_2d/images/N.JPG
    OTU_2d/annotations/N.PNG              one RGB colour per tumour type (N_binary*.PNG ignored)
    OTU_2d/train.txt, val.txt             or train_cls.txt, val_cls.txt ("N.JPG  class")

Shared copy: regrouped per tumour type, with a split file whose paths carry a prefix
(``OTU_2D/8_layers/``) that does not exist on disk and whose split values are train/validation::

    <TumourType>/images/N.JPG, <TumourType>/annotations/N.PNG, OTU_2D_8-layers.json

The lesion is any non-zero annotation pixel. The image label is the tumour type: the folder
name in the copy, else the annotation colour (the official palette). Pairs whose annotation size
differs from the image (e.g. ``Teratoma/598``) are skipped with a warning.

Overlays checked: some images carry scanner text and dotted caliper lines, left as they are; the 16
native-sample annotations hold the tumour regions only, no text or marks.
"""

from __future__ import annotations


import re
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import find_dirs, natural_sorted, nonzero, relative_source
from ._tables import read_json, read_text_lines

STRUCTURE = "ovarian_tumor"
# Official palette (RGB) -> tumour type, spelled as the shared copy's folders.
PALETTE: dict[tuple[int, int, int], str] = {
    (64, 0, 0): "Chocolate_Cyst",
    (0, 64, 0): "Serous_Cystadenoma",
    (0, 0, 64): "Teratoma",
    (64, 0, 64): "Theca_Cell_Tumor",
    (64, 64, 0): "Simple_Cyst",
    (64, 64, 64): "Ovary_Normal",
    (0, 128, 0): "Mucinous_Cystadenoma",
    (0, 0, 128): "High-grade_Serous_Cystadenoma",
}
_TYPES = {t.lower(): t for t in PALETTE.values()}
_SPLIT_LIST = re.compile(r"^(train|val)(?:_cls)?\.txt$", re.IGNORECASE)


def _key(path: str | Path) -> str:
    """Match key for split entries: the last three path parts (type/images/N.JPG), lower case."""
    parts = Path(str(path).replace("\\", "/")).parts
    return "/".join(parts[-3:]).lower()


def _read_splits(native_dir: Path, writer: CocoWriter
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """({path key: split} from JSON split files, {image stem: split} from official txt lists).

    A JSON file that does not parse, or a list line that is not UTF-8, is skipped with a warning
    naming it (:mod:`._tables`); the images it would have split keep ``split`` None.
    """
    by_path: dict[str, str] = {}
    for path in natural_sorted(native_dir.rglob("*.json")):
        entries = read_json(path, relative_source(path, native_dir), writer.warn)
        if isinstance(entries, list):
            for e in entries:
                if isinstance(e, dict) and "file_path_img" in e and "split" in e:
                    by_path[_key(e["file_path_img"])] = str(e["split"])
    by_stem: dict[str, str] = {}
    for path in natural_sorted(p for p in native_dir.rglob("*.txt") if _SPLIT_LIST.match(p.name)):
        split = _SPLIT_LIST.match(path.name)[1].lower()  # type: ignore[index]
        for _, line in read_text_lines(path, relative_source(path, native_dir), writer.warn):
            if line.strip():
                by_stem[Path(line.split()[0]).stem] = split
    return by_path, by_stem


def _colour_label(annotation: np.ndarray) -> str | None:
    """The tumour type whose palette colour covers most annotated pixels (None if none)."""
    if annotation.ndim != 3:
        return None
    colours, counts = np.unique(annotation[..., :3].reshape(-1, 3), axis=0, return_counts=True)
    best = [(c, PALETTE[tuple(int(v) for v in col)]) for col, c in zip(colours, counts)
            if tuple(int(v) for v in col) in PALETTE]
    return max(best)[1] if best else None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every MMOTU-2D image/annotation pair under ``native_dir``."""
    native_dir = Path(native_dir)
    by_path, by_stem = _read_splits(native_dir, writer)
    for images_dir in find_dirs(native_dir, "images"):
        ann_dir = images_dir.parent / "annotations"
        if not ann_dir.is_dir():
            continue
        annotations = {p.stem.lower(): p for p in ann_dir.iterdir()
                       if p.suffix.lower() == ".png"}
        # The official release also ships N_binary.PNG beside each colour annotation: not orphans.
        pairs = matched_pairs(
            natural_sorted(p for p in images_dir.iterdir()
                           if p.suffix.lower() in (".jpg", ".jpeg", ".png")),
            lambda image_path, by_stem=annotations: by_stem.get(image_path.stem.lower()),
            native_dir, writer, what="annotation",
            orphans=(p for k, p in annotations.items() if not k.endswith("_binary")))
        for image_path, source, image, raw in pairs:
            label = _TYPES.get(images_dir.parent.name.lower()) or _colour_label(raw)
            split = by_path.get(_key(source), by_stem.get(image_path.stem))
            writer.add_image(image, {STRUCTURE: nonzero(raw)}, source=source, split=split,
                             label=label, name_parts=(label or "",))


SOURCE = Source(
    spec=SourceSpec(
        name="MMOTU_2d",
        aliases=("MMOTU-2D", "MMOTU2D", "OTU_2d", "OTU-2D"),
        url="https://github.com/cv516Buaa/MMOTU_DS2Net",
        citation="Zhao Q, Lyu S, Bai W, et al. A multi-modality ovarian tumor ultrasound image "
                 "dataset for unsupervised cross-domain semantic segmentation. arXiv:2207.06799 "
                 "(2022).",
        licence="research use; cite the paper",
        anatomy="ovary",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="JPG images; RGB PNG annotations (one colour per tumour type); split lists",
        real_sample_tests=True,
        notes="label = tumour type; official train/val split; size-mismatched pairs skipped",
    ),
    convert=convert,
)
