"""Segthy (SegThy): 3D freehand ultrasound volumes of the neck of volunteers (TUM CAMP).

Native layout (``US_data.zip`` or its folder ``US_volunteer_dataset/ground_truth_data/``):
``*.nii`` / ``*.nii.gz`` volumes and label volumes; a label volume has ``label`` in its path
(folder ``US_thyroid_label/`` or a ``*label*.nii`` name). A label pairs with the volume whose
name reduces to the same id once the tokens ``US``, ``label(s)``, ``thyroid``, ``gt`` are removed
(``P01_US.nii`` <-> ``US_thyroid_label/P01.nii``). When several label volumes pair with one
volume (thyroid-only and thyroid + vessels), they are overlaid in path order, a later file's
non-zero codes replacing earlier ones.

Label codes (the release's legend): 1 thyroid; 2 and 4 carotid artery (left / right);
3 and 5 jugular vein (left / right). Other values are warned about. MRI data (any path
component starting with ``MRI``) is not ultrasound and is skipped. Volumes are sliced along the
first array axis; slices with a label become images with their ``slice`` index and
``group`` = the volunteer's volume id.

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
from ._pairs import read_nifti_entry
from ._read import natural_key
from ._shapes import add_labelled_slices
from ._tree import NativeTree, TreeEntry
from ._volumes import volume_to_uint8

SPEC = SourceSpec(
    name="Segthy",
    aliases=("SegThy", "SegThy-US", "TUM SegThy"),
    url="https://www.cs.cit.tum.de/camp/publications/segthy-dataset/",
    citation=("Krönke M, Eilers C, Dimova D, et al. Tracked 3D ultrasound and deep neural "
              "network-based thyroid segmentation reduce interobserver variability in thyroid "
              "volumetry. PLoS ONE 17(7):e0268550 (2022)."),
    licence="unknown — check upstream",
    anatomy="thyroid / neck vessels",
    structures=("thyroid_gland", "carotid_artery", "jugular_vein"),
    kind="3d",
    native_format="*.nii volumes + *label*.nii: 1 thyroid, 2/4 carotid, 3/5 jugular",
)

VALUES = {1: "thyroid_gland", 2: "carotid_artery", 4: "carotid_artery", 3: "jugular_vein",
          5: "jugular_vein"}
_DROP_TOKENS = {"us", "label", "labels", "thyroid", "gt"}


def _nifti(entry: TreeEntry) -> bool:
    return entry.name.lower().endswith((".nii", ".nii.gz"))


def case_id(name: str) -> str:
    """The volume id shared by a volume and its labels (``P01_US.nii`` -> ``p01``)."""
    stem = re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE)
    tokens = [t for t in re.split(r"[_\-\s]+", stem.lower()) if t and t not in _DROP_TOKENS]
    return "_".join(tokens)


def _is_label(entry: TreeEntry) -> bool:
    return any("label" in p.lower() for p in entry.parts)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a SegThy ultrasound tree into ``writer``; see the module docstring."""
    volumes: dict[str, TreeEntry] = {}
    labels: dict[str, list[TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(_nifti):
            if any(p.lower().startswith("mri") for p in entry.parts):
                continue
            key = case_id(entry.name)
            if _is_label(entry):
                labels.setdefault(key, []).append(entry)
            elif key in volumes:
                writer.warn(entry.path, f"second volume with id {key!r} (first: "
                                        f"{volumes[key].path}); ignored")
            else:
                volumes[key] = entry
        if not labels:
            raise FileNotFoundError(f"no SegThy label volumes under {native_dir}: expected "
                                    "*.nii volumes and *label*.nii")
        for key in sorted(set(volumes) | set(labels), key=natural_key):
            if key not in labels:
                writer.warn(volumes[key].path, "no label volume; skipped")
            elif key not in volumes:
                for entry in labels[key]:
                    writer.warn(entry.path, "label volume without an image volume; skipped")
            else:
                _convert_case(key, volumes[key], labels[key], writer)


def _convert_case(key: str, volume: TreeEntry, label_entries: list[TreeEntry],
                  writer: CocoWriter) -> None:
    image = read_nifti_entry(volume, writer)
    if image is None:
        return
    if image.ndim != 3:
        writer.warn(volume.path, f"expected a 3D volume, got shape {image.shape}; skipped")
        return
    merged: np.ndarray | None = None
    for entry in label_entries:
        label = read_nifti_entry(entry, writer)
        if label is None:
            continue
        if label.shape != image.shape:
            writer.warn(entry.path, f"label shape {label.shape} differs from volume shape "
                                    f"{image.shape}; skipped")
            continue
        label = np.rint(label).astype(np.int32) if label.dtype.kind == "f" else label
        # Vessel labels (2-5) take precedence over a thyroid-only file's 0 background.
        merged = label if merged is None else np.where(label != 0, label, merged)
    if merged is None:
        return
    add_labelled_slices(writer, volume_to_uint8(image), merged, VALUES, source=volume.path,
                        label_source="; ".join(e.path for e in label_entries), group=key,
                        name_parts=(key,))


SOURCE = Source(spec=SPEC, convert=convert)
