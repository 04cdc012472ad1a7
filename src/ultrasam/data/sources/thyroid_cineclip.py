"""Thyroid_US_Cineclip: Stanford AIMI thyroid ultrasound cine clips with nodule masks.

Native layout: one ``dataset.hdf5`` (folder or archive) with four aligned datasets of length N:
``image`` (N x H x W uint8 frames), ``mask`` (N x H x W, nodule 1 or 255), ``annot_id``
(N clip / nodule ids, bytes or str) and ``frame_num`` (N frame indices within the clip). Frames
are grouped by ``annot_id`` (``group``; one clip = one nodule) and keep ``frame_num`` as
``frame``. Frames whose mask is empty are not converted (unannotated). Mask values other than
0, 1 and 255 are warned about once per file. When a ``metadata.csv`` with ``annot_id`` and
``histopath_diagnosis`` columns is present, the diagnosis (lower case, e.g. ``benign``) becomes
the image ``label``. Frames are read in blocks so memory stays bounded for the full release.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._read import to_uint8
from ._shapes import format_unknown
from ._tables import read_csv_dicts
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="Thyroid_US_Cineclip",
    aliases=("Thyroid US Cineclip", "Thyroid Ultrasound Cine-clip", "thyroid_cineclip",
             "Stanford thyroid cine-clip"),
    url="https://stanfordaimi.azurewebsites.net/datasets/a72f2b02-7b53-4c5d-963c-d7253220bfd5",
    citation=("Yamashita R, Kapoor T, Alam MN, et al. Toward reduction in false-positive thyroid "
              "nodule biopsies with a deep learning-based risk stratification system using US "
              "cine-clip images. Radiology: Artificial Intelligence 4(3):e210174 (2022)."),
    licence="Stanford University Dataset Research Use Agreement (non-commercial research)",
    anatomy="thyroid",
    structures=("thyroid_nodule",),
    kind="video",
    native_format="dataset.hdf5 with datasets image, mask, annot_id, frame_num",
)

_REQUIRED = ("image", "mask", "annot_id", "frame_num")
_BLOCK = 256  # frames read per HDF5 access


def _text(value: Any) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace").strip()
    return str(value).strip()


def _read_labels(entries: list[TreeEntry], writer: CocoWriter) -> dict[str, str]:
    """annot_id -> diagnosis from a metadata CSV, when one is present."""
    labels: dict[str, str] = {}
    for entry in entries:
        try:
            data = entry.read_bytes()
        except OSError as e:
            writer.warn(entry.path, f"unreadable metadata: {e}; file skipped")
            continue
        for _, row in read_csv_dicts(data, entry.path, writer.warn):
            clip, diagnosis = row.get("annot_id"), row.get("histopath_diagnosis")
            if clip and diagnosis:
                labels[clip.strip()] = diagnosis.strip().lower()
    return labels


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert the cine-clip HDF5 file(s) into ``writer``; see the module docstring."""
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        entries = tree.files()
        files = [e for e in entries if e.suffix in (".hdf5", ".h5")]
        if not files:
            raise FileNotFoundError(f"no dataset.hdf5 under {native_dir}")
        labels = _read_labels([e for e in entries if e.suffix == ".csv"], writer)
        for entry in files:
            _convert_file(entry, labels, writer)


def _convert_file(entry: TreeEntry, labels: dict[str, str], writer: CocoWriter) -> None:
    import h5py  # optional dependency (extra "data")

    try:
        handle = (h5py.File(entry.file, "r") if entry.file is not None
                  else h5py.File(io.BytesIO(entry.read_bytes()), "r"))
    except (OSError, ValueError) as e:
        writer.warn(entry.path, f"skipped: not a readable HDF5 file ({e})")
        return
    with handle as f:
        missing = [k for k in _REQUIRED if k not in f]
        if missing:
            writer.warn(entry.path, f"skipped: missing dataset(s) {missing}")
            return
        n = len(f["image"])
        if any(len(f[k]) != n for k in _REQUIRED):
            writer.warn(entry.path, "skipped: datasets image/mask/annot_id/frame_num differ in "
                                    f"length {[len(f[k]) for k in _REQUIRED]}")
            return
        unknown: dict[Any, int] = {}
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            images, masks = f["image"][start:stop], f["mask"][start:stop]
            clips, frames = f["annot_id"][start:stop], f["frame_num"][start:stop]
            for i in range(stop - start):
                _add_frame(entry, start + i, images[i], masks[i], _text(clips[i]),
                           int(frames[i]), labels, unknown, writer)
        if unknown:
            writer.warn(entry.path, f"unexpected mask {format_unknown(unknown)}; only 1 and "
                                    "255 are nodule")


def _add_frame(entry: TreeEntry, row: int, image: np.ndarray, mask: np.ndarray, clip: str,
               frame: int, labels: dict[str, str], unknown: dict[Any, int],
               writer: CocoWriter) -> None:
    """Add HDF5 row ``row`` (``image``/``mask`` H x W) unless its mask is empty."""
    image = np.squeeze(image)
    mask = np.squeeze(mask)
    values, counts = np.unique(mask, return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist()):
        if v not in (0, 1, 255):
            unknown[v] = unknown.get(v, 0) + c
    nodule = np.isin(mask, (1, 255))
    if not nodule.any():
        return
    try:
        writer.add_image(to_uint8(image), {"thyroid_nodule": nodule}, source=entry.path,
                         group=clip, frame=frame, label=labels.get(clip), name_parts=(clip,),
                         extra={"hdf5_row": row})
    except ValueError as e:
        writer.warn(entry.path, f"frame {frame} of clip {clip}: skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
