"""MicroSeg: micro-ultrasound prostate volumes (MicroSegNet), the same Zenodo record as MUP.

UltraSam lists MicroSeg and MUP as two datasets, but both are Zenodo record 10475293 (same
volumes, same expert annotations): converting both in full would put every volume into the
corpus twice, and across a train/test boundary if the two were split independently.
Deduplication rule: **MUP converts every volume that has an expert annotation; MicroSeg converts
only what MUP does not** — volumes of the record that have no expert annotation but a
non-expert one (annotated by a trainee in the release), sliced exactly as MUP does. On the
complete official record MicroSeg therefore adds no image; it still reads the record so that a
partial copy (or a copy holding only non-expert annotations) is not lost. Layout, label codes
and slicing: see ``mup.py``.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._tree import NativeTree
from .mup import CITATION, LICENCE, RECORD_URL, convert_case, scan_record

log = logging.getLogger(__name__)

SPEC = SourceSpec(
    name="MicroSeg",
    aliases=("MicroSegNet", "Micro-Seg"),
    url=RECORD_URL,
    citation=CITATION,
    licence=LICENCE,
    anatomy="prostate",
    structures=("prostate",),
    kind="3d",
    native_format=("nii.gz micro-US volumes + expert / non-expert annotations (same record as "
                   "MUP)"),
    notes=("Deduplicated against MUP: converts only volumes without an expert annotation "
           "(using the non-expert one); on the full record this is none."),
    extra={"same_record_as": "MUP"},
)

def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert the record's volumes that MUP leaves out (see the module docstring)."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        cases = scan_record(tree)
        if not any(c.image is not None for c in cases.values()):
            raise FileNotFoundError(f"no micro-ultrasound volumes under {native_dir}: expected "
                                    "microUS_{train,test}_NN.nii.gz")
        owned_by_mup = 0
        for key in sorted(cases):
            case = cases[key]
            if case.image is None:
                continue
            if case.expert is not None:
                owned_by_mup += 1
                continue
            if case.non_expert is None:
                writer.warn(case.image.path, "no annotation at all; skipped")
                continue
            convert_case(case, case.non_expert, writer)
        log.info("MicroSeg: %d expert-annotated volume(s) left to MUP", owned_by_mup)


SOURCE = Source(spec=SPEC, convert=convert)
