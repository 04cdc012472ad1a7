"""FASS: Fetal Abdominal Structures Segmentation (Mendeley 4gcpm9dsc3).

Native layout: ``*.png`` scans, each with a ``*.npy`` of the same stem holding a *pickled dict*
(``np.save`` of a dict) of per-structure masks: ``artery``, ``liver``, ``stomach``, ``vein``
(keys matched case-insensitively; the masks may also sit in a nested dict such as
``{"structures": {...}}``, and an ``image`` entry is ignored). The pickle is read with a
numpy-only restricted unpickler (see :func:`._volumes.read_pickled_npy`), never
``allow_pickle=True``. Unknown mask keys are warned about. ``group`` = the leading patient code
(``P012`` in ``P012_IMG3``) when the file names carry one.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask, read_entry_image
from ._read import UnreadableFile, natural_key
from ._tree import NativeTree, TreeEntry
from ._volumes import read_pickled_npy

STRUCTURES = ("artery", "liver", "stomach", "vein")
_IGNORED_KEYS = {"image", "img", "name", "filename", "file_name"}
_PATIENT = re.compile(r"^(P\d+)", re.IGNORECASE)


def _masks(obj: Any, file: str, writer: CocoWriter) -> dict[str, np.ndarray]:
    """Structure -> mask from the unpickled dict (nested dicts searched one level deep)."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a pickled dict of masks, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = str(key).strip().lower()
        if isinstance(value, dict):
            out.update(_masks(value, file, writer))
        elif name in STRUCTURES:
            out[name] = binary_mask(np.asarray(value))
        elif name not in _IGNORED_KEYS:
            writer.warn(file, f"unknown mask key {key!r} (known: {list(STRUCTURES)}); left out")
    return out


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Each PNG with the masks of the same-stem ``.npy`` dict."""
    images: dict[str, TreeEntry] = {}
    arrays: dict[str, TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix in (".png", ".npy")):
            (images if e.suffix == ".png" else arrays)[e.stem.lower()] = e
        for stem in sorted(images, key=natural_key):
            img_e = images[stem]
            if stem not in arrays:
                writer.warn(img_e.path, "no .npy mask dict with the same name; skipped")
                continue
            try:
                image = read_entry_image(img_e)
                masks = _masks(read_pickled_npy(arrays[stem].read_bytes()), arrays[stem].path,
                               writer)
            except UnreadableFile as e:
                writer.warn(str(e.path), e.reason)
                continue
            except (ValueError, OSError) as e:
                writer.warn(arrays[stem].path, f"unreadable mask dict: {e}")
                continue
            m = _PATIENT.match(img_e.stem)
            group = m.group(1).upper() if m else None
            add_or_warn(writer, image, masks, img_e.path, group=group)


SOURCE = Source(
    spec=SourceSpec(
        name="FASS",
        aliases=("Fetal Abdominal Structures Segmentation",),
        url="https://data.mendeley.com/datasets/4gcpm9dsc3",
        citation="FASS: Fetal Abdominal Structures Segmentation dataset using ultrasonic images, "
                 "Mendeley Data 10.17632/4gcpm9dsc3",
        licence="CC-BY-4.0 (Mendeley Data) — check upstream",
        anatomy="fetal abdomen",
        structures=STRUCTURES,
        kind="2d",
        native_format="*.png + same-stem *.npy pickled dict of masks (artery, liver, stomach, "
                      "vein)",
    ),
    convert=convert,
)
