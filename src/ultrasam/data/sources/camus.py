"""CAMUS: 2D echocardiography, apical two- and four-chamber half sequences (INSA Lyon).

Native layout: one folder per patient holding ``patientXXXX_{2CH,4CH}_half_sequence.nii.gz`` and
``..._half_sequence_gt.nii.gz`` (the ``_ED`` / ``_ES`` files repeat two frames of the sequence and
are not converted). Label codes: 1 left-ventricle cavity, 2 myocardium, 3 left atrium; 0 is the
background (also everywhere outside the imaging fan). Sequences are read slowest axis first
(frames x rows x columns, see :mod:`._volumes`) and cut into frames; ``group`` = the patient,
``frame`` = the index in the half sequence.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, label_masks
from ._tree import NativeTree, TreeEntry
from ._volumes import read_nifti, volume_to_uint8

CODES = {1: "left_ventricle", 2: "myocardium", 3: "left_atrium"}
_NAME = re.compile(
    r"^(?P<patient>patient\d+)_(?P<view>[24]CH)_half_sequence(?P<gt>_gt)?\.nii(\.gz)?$",
    re.IGNORECASE)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Every frame of every half sequence that has a ground-truth sequence."""
    images: dict[tuple[str, str], TreeEntry] = {}
    labels: dict[tuple[str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files():
            m = _NAME.match(e.name)
            if m:
                key = (m.group("patient").lower(), m.group("view").upper())
                (labels if m.group("gt") else images)[key] = e
        for key in sorted(images):
            patient, view = key
            img_e = images[key]
            if key not in labels:
                writer.warn(img_e.path, "no _half_sequence_gt file; skipped")
                continue
            try:
                seq = volume_to_uint8(read_nifti(img_e.read_bytes()).array)
                gt = read_nifti(labels[key].read_bytes()).array
            except (ValueError, OSError) as e:
                writer.warn(img_e.path, f"cannot read the sequence pair: {e}")
                continue
            if seq.ndim != 3 or gt.shape != seq.shape:
                writer.warn(labels[key].path, f"ground truth {gt.shape} does not match the "
                                              f"sequence {seq.shape}; skipped")
                continue
            gt = np.rint(gt).astype(np.int64)
            label_masks(gt, CODES, writer, labels[key].path)  # warns once about unknown codes
            for t in range(seq.shape[0]):
                masks = {s: gt[t] == v for v, s in CODES.items()}
                add_or_warn(writer, seq[t], masks, img_e.path, group=patient, frame=t,
                            name_parts=(patient, view))


SOURCE = Source(
    spec=SourceSpec(
        name="CAMUS",
        aliases=("CAMUS echo",),
        url="https://www.creatis.insa-lyon.fr/Challenge/camus/",
        citation="Leclerc et al., Deep learning for segmentation using an open large-scale "
                 "dataset in 2D echocardiography, IEEE TMI 38(9) (2019)",
        licence="unknown — check upstream (research use, registration on the challenge site)",
        anatomy="heart",
        structures=("left_ventricle", "myocardium", "left_atrium"),
        kind="video",
        native_format="patientXXXX/patientXXXX_{2CH,4CH}_half_sequence{,_gt}.nii.gz; labels 1 LV "
                      "cavity, 2 myocardium, 3 left atrium",
    ),
    convert=convert,
)
