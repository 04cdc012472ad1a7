"""EchoCP: contrast transthoracic echocardiography (apical four-chamber cine loops) for PFO.

Native layout (Kaggle archive or folder): ``EchoCP_dataset/<patient>_<r|v>_image.nii.gz`` and
``<patient>_<r|v>_label.nii.gz`` (``r`` rest, ``v`` Valsalva); a file with ``label`` in its name
is the label of the file with ``image`` in its place. Each NIfTI is a cine loop, sliced along
the first array axis (time, slowest axis first — see ``_volumes``); frames with a label become
images keeping their ``frame`` index. ``group`` = the patient id, so that a patient's rest and
Valsalva loops stay on one side of a split; the manoeuvre goes to the image's ``action`` field.

Label codes are taken to follow the convention of the same group's CardiacUDC release
(1 left ventricle, 2 left atrium, 3 right atrium, 4 right ventricle): not stated by the EchoCP
release itself, so check against the data; other values are warned about.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import complete_pair, read_nifti_entry
from ._read import natural_key
from ._shapes import add_labelled_slices
from ._tree import NativeTree, TreeEntry
from ._volumes import volume_to_uint8

SPEC = SourceSpec(
    name="EchoCP",
    aliases=("Echo-CP", "EchoCP-PFO"),
    url="https://www.kaggle.com/datasets/xiaoweixumedicalai/echocp",
    citation=("Wang T, Li Z, Huang M, et al. EchoCP: an echocardiography dataset in contrast "
              "transthoracic echocardiography for patent foramen ovale diagnosis. MICCAI 2021, "
              "LNCS 12902."),
    licence="unknown — check upstream (Kaggle dataset page)",
    anatomy="heart",
    structures=("left_ventricle", "left_atrium", "right_atrium", "right_ventricle"),
    kind="video",
    native_format="EchoCP_dataset/<id>_<r|v>_{image,label}.nii.gz",
    notes=("Label codes 1-4 assumed to follow CardiacUDC (LV, LA, RA, RV); unverified against "
           "the EchoCP paper. Only labelled frames are converted."),
)

VALUES = {1: "left_ventricle", 2: "left_atrium", 3: "right_atrium", 4: "right_ventricle"}
_NAME = re.compile(r"^(?P<stem>.*?)(?P<role>image|label)(?P<tail>[^/]*?)\.nii(\.gz)?$",
                   re.IGNORECASE)
_ACTIONS = {"r": "rest", "v": "valsalva"}


def _nifti(entry: TreeEntry) -> bool:
    return entry.name.lower().endswith((".nii", ".nii.gz"))


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert an EchoCP tree into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, str], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(_nifti):
            m = _NAME.match(entry.name)
            if m is None:
                continue
            key = (entry.parent, m.group("stem") + "*" + m.group("tail"))
            pairs.setdefault(key, {})[m.group("role").lower()] = entry
        if not any("label" in p for p in pairs.values()):
            raise FileNotFoundError(f"no EchoCP label volumes under {native_dir}: expected "
                                    "EchoCP_dataset/*_label.nii.gz")
        for key in sorted(pairs, key=lambda k: (k[0], natural_key(k[1]))):
            entries = complete_pair(pairs[key].get("image"), pairs[key].get("label"), writer,
                                    mask_word="label")
            if entries is not None:
                _convert_pair(*entries, writer)


def _convert_pair(image_entry: TreeEntry, label_entry: TreeEntry, writer: CocoWriter) -> None:
    frames = read_nifti_entry(image_entry, writer)
    if frames is None:
        return
    label = read_nifti_entry(label_entry, writer)
    if label is None:
        return
    frames = volume_to_uint8(frames)
    stem = image_entry.name.split("_image")[0].split("_IMAGE")[0]
    tokens = stem.split("_")
    patient = tokens[0] if tokens and tokens[0] else stem
    action = _ACTIONS.get(tokens[1].lower()) if len(tokens) > 1 else None
    add_labelled_slices(writer, frames, label, VALUES, source=image_entry.path,
                        label_source=label_entry.path, group=patient, axis="frame",
                        name_parts=(patient, tokens[1] if len(tokens) > 1 else ""),
                        extra={"action": action})


SOURCE = Source(spec=SPEC, convert=convert)
