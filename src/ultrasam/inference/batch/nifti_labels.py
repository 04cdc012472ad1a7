"""NIfTI label volumes for NIfTI inputs: every segmented slice of a volume back in 3-D.

A batch may segment several slices (along any axis) of one volume; the label volume has the
input's shape and affine, 0 for background and K + 1 for object K of each slice (uint8, or
uint16 past 255 objects), so it overlays the input in any viewer. Slices map back exactly as
:mod:`ultrasam.io.volumes` cut them (the 2D slice is nibabel's plane transposed).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .masks import decode_rle


@dataclass
class VolumeLabels:
    """The records' slices of one volume, gathered while results stream by."""

    source: str
    key: str
    slices: list[tuple[int, int, list[dict[str, Any]]]] = field(default_factory=list)


def volume_key(record: dict[str, Any]) -> str:
    """Output key of a volume's label file: the item key without its ``.axisA.sliceK`` part."""
    key = str(record["key"])
    for marker in (".axis", ".slice"):
        cut = key.rfind(marker, key.rfind("/") + 1)
        while cut != -1:
            key = key[:cut]
            cut = key.rfind(marker, key.rfind("/") + 1)
    return key


def add_record(volumes: dict[str, VolumeLabels], record: dict[str, Any]) -> None:
    """Remember an ok record of a NIfTI slice (only its RLEs are kept)."""
    if record.get("status") != "ok" or record.get("format") != "NIFTI" \
            or "volume" not in record:
        return
    source = str(record["image"])
    vol = volumes.setdefault(source, VolumeLabels(source, volume_key(record)))
    vol.slices.append((int(record["volume"]["slice"]), int(record["volume"]["axis"]),
                       [o["rle"] for o in record["objects"]]))


def write_label_volume(vol: VolumeLabels, out_dir: Path) -> Path:
    """Write ``out/<key>.labels.nii.gz`` for one volume; returns its path."""
    from ...io.volumes import require_nibabel
    from .files import write_bytes_atomic

    nib = require_nibabel()
    img = nib.load(vol.source)
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    shape3 = shape + (1,) * (3 - len(shape))
    n_labels = max(len(rles) for _, _, rles in vol.slices)
    dtype = np.uint8 if n_labels < 256 else np.uint16
    labels = np.zeros(shape3, dtype)
    for index, axis, rles in vol.slices:
        key: list[Any] = [slice(None)] * 3
        key[2 - axis] = index  # ITK-order axis -> nibabel axis, as io.volumes cuts slices
        plane = labels[tuple(key)]
        for k, rle in enumerate(rles):
            plane[decode_rle(rle).T] = k + 1  # the 2D slice is the nibabel plane transposed
    header = img.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1.0, 0.0)  # labels are stored as they are, never rescaled
    out_img = type(img)(labels.reshape(shape), img.affine, header)
    path = out_dir / f"{vol.key}.labels.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same labels give the same bytes, whichever run or engine wrote them.
    write_bytes_atomic(path, gzip.compress(out_img.to_bytes(), compresslevel=6, mtime=0))
    return path
