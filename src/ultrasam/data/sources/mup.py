"""MUP: micro-ultrasound prostate volumes with expert prostate annotations (Zenodo 10475293).

Native layout (the Zenodo zip, or its extracted folder): NIfTI volumes
``microUS_{train,test}_NN.nii.gz`` with expert annotations ``expert_annotation_{train,test}_NN
.nii.gz`` (in ``{train,test}/micro_ultrasound_scans/`` and ``.../expert_annotations/``), paired
by split and by the first integer of the name. Non-expert annotations
(``non_expert_annotation_*``) are not used here. Annotation values 0/1 (255 accepted as 1);
other values are warned about. Volumes are sliced along the first array axis (slowest axis
first, see ``_volumes``); each slice with prostate becomes an image keeping its ``slice`` index,
``group`` = ``<split>_<NN>`` (one patient) and the official split.

MicroSeg (``microseg.py``) is the same Zenodo record under another name: it converts only the
volumes this source cannot (no expert annotation), so a corpus holding both never sees a volume
twice.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import read_nifti_entry
from ._shapes import add_labelled_slices, first_int
from ._tree import NativeTree, TreeEntry
from ._volumes import volume_to_uint8

# MicroSeg comes from the same Zenodo record and shares these.
RECORD_URL = "https://zenodo.org/records/10475293"
CITATION = ("Jiang H, Imran M, Muralidharan P, et al. MicroSegNet: a deep learning approach for "
            "prostate segmentation on micro-ultrasound images. Computerized Medical Imaging "
            "and Graphics 112:102326 (2024).")
LICENCE = "unknown — check upstream (Zenodo record 10475293)"

SPEC = SourceSpec(
    name="MUP",
    aliases=("Micro-Ultrasound Prostate", "micro_usp", "microUS prostate"),
    url=RECORD_URL,
    citation=CITATION,
    licence=LICENCE,
    anatomy="prostate",
    structures=("prostate",),
    kind="3d",
    native_format=("microUS_{train,test}_NN.nii.gz + expert_annotation_{train,test}_NN.nii.gz, "
                   "paired by the first integer"),
    notes="Same Zenodo record as MicroSeg; MUP owns every expert-annotated volume.",
)

VALUES = {1: "prostate", 255: "prostate"}

_IMAGE = re.compile(r"^micro_?us_", re.IGNORECASE)
_EXPERT = re.compile(r"^expert_annotations?_", re.IGNORECASE)
_NON_EXPERT = re.compile(r"^non[_-]?expert_annotations?_", re.IGNORECASE)
_SPLIT = re.compile(r"(?:^|[_/-])(train|test)(?:$|[_/.-])", re.IGNORECASE)


@dataclass
class Case:
    """One patient volume of the record and the annotation files found for it."""

    split: str
    number: int
    image: TreeEntry | None = None
    expert: TreeEntry | None = None
    non_expert: TreeEntry | None = None
    extra: list[TreeEntry] = field(default_factory=list)

    @property
    def group(self) -> str:
        return f"{self.split}_{self.number:02d}"


def _nifti(entry: TreeEntry) -> bool:
    return entry.name.lower().endswith((".nii", ".nii.gz"))


def scan_record(tree: NativeTree) -> dict[tuple[str, int], Case]:
    """Every (split, number) of the record with its image and annotation entries."""
    cases: dict[tuple[str, int], Case] = {}
    for entry in tree.files(_nifti):
        name = entry.name
        if _NON_EXPERT.match(name):
            role = "non_expert"
        elif _EXPERT.match(name):
            role = "expert"
        elif _IMAGE.match(name):
            role = "image"
        else:
            continue
        m = _SPLIT.search(name) or _SPLIT.search(entry.path)
        number = first_int(name)
        if m is None or number is None:
            continue
        key = (m.group(1).lower(), number)
        case = cases.setdefault(key, Case(*key))
        if getattr(case, role) is None:
            setattr(case, role, entry)
        else:
            case.extra.append(entry)
    return cases


def convert_case(case: Case, annotation: TreeEntry, writer: CocoWriter) -> None:
    """Slice ``case.image`` and ``annotation`` into ``writer`` (warning when unreadable)."""
    assert case.image is not None
    image = read_nifti_entry(case.image, writer)
    if image is None:
        return
    label = read_nifti_entry(annotation, writer)
    if label is None:
        return
    if image.ndim != 3:
        writer.warn(case.image.path, f"expected a 3D volume, got shape {image.shape}; skipped")
        return
    add_labelled_slices(writer, volume_to_uint8(image), label, VALUES, source=case.image.path,
                        label_source=annotation.path, group=case.group, split=case.split,
                        name_parts=(case.group,))


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert the micro-ultrasound record's expert-annotated volumes into ``writer``."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        cases = scan_record(tree)
        if not any(c.image is not None for c in cases.values()):
            raise FileNotFoundError(f"no micro-ultrasound volumes under {native_dir}: expected "
                                    "microUS_{train,test}_NN.nii.gz")
        for key in sorted(cases):
            case = cases[key]
            for dup in case.extra:
                writer.warn(dup.path, f"second file for case {case.group}; ignored")
            if case.image is None:
                for orphan in (case.expert, case.non_expert):
                    if orphan is not None:
                        writer.warn(orphan.path, "annotation without a micro-US volume")
                continue
            if case.expert is None:
                writer.warn(case.image.path, "no expert annotation; left to MicroSeg")
                continue
            convert_case(case, case.expert, writer)


SOURCE = Source(spec=SPEC, convert=convert)
