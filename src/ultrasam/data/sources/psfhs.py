"""PSFHS: pubic symphysis and fetal head segmentation (Bai et al., Scientific Data 2024).

Layout (official and shared copy)::

    image_mha/NNNNN.mha    uncompressed MetaImage, 3 x 256 x 256 uint8 (three identical planes)
    label_mha/NNNNN.mha    256 x 256 uint8: 0 background, 1 pubic symphysis, 2 fetal head

A sibling of FH-PS-AOP (same group, same format); not one of UltraSam's 43 datasets. Images with
three identical planes become grey; planes that differ are read as RGB.

Overlays checked: the 6 native-sample label maps hold exactly the two structures, no text or marks
(the images carry none either).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import label_structures, sizes_match, warn_orphans
from ._read import (UnreadableFile, find_dirs, natural_sorted, relative_source,
                   to_grey_if_uniform, to_uint8)
from ._volumes import read_metaimage


def _read(path: Path) -> np.ndarray:
    """The voxel array of a MetaImage file; UnreadableFile names the file when it is malformed."""
    try:
        return read_metaimage(path).array
    except ValueError as e:
        raise UnreadableFile(path, str(e).removeprefix(f"{path}: ")) from e


LABELS = {1: "pubic_symphysis", 2: "fetal_head"}


def _as_image(volume: np.ndarray, path: Path) -> np.ndarray:
    """``H x W`` or ``H x W x 3`` uint8 from a 2D MetaImage or one stored as 1 or 3 planes."""
    if volume.ndim == 3 and volume.shape[0] in (1, 3) and volume.shape[-1] not in (1, 3):
        volume = volume[0] if volume.shape[0] == 1 else np.moveaxis(volume, 0, -1)
    if volume.ndim == 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 2:
        return to_uint8(volume)
    if volume.ndim == 3 and volume.shape[-1] == 3:
        return to_grey_if_uniform(to_uint8(volume))
    raise UnreadableFile(path, f"expected a 2D image or 3 planes, got shape {volume.shape}")


def _as_label(volume: np.ndarray, path: Path) -> np.ndarray:
    """``H x W`` label map from a 2D MetaImage or a single-plane volume."""
    volume = np.squeeze(volume)
    if volume.ndim == 3 and all((volume[i] == volume[0]).all() for i in range(volume.shape[0])):
        volume = volume[0]
    if volume.ndim != 2:
        raise UnreadableFile(path, f"expected a 2D label map, got shape {volume.shape}")
    return volume


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every ``image_mha`` image under ``native_dir`` with its two structures."""
    native_dir = Path(native_dir)
    for image_dir in find_dirs(native_dir, "image_mha"):
        label_dir = image_dir.parent / "label_mha"
        claimed: set[Path] = set()
        for image_path in natural_sorted(p for p in image_dir.iterdir()
                                         if p.suffix.lower() in (".mha", ".mhd")):
            source = relative_source(image_path, native_dir)
            label_path = label_dir / image_path.name
            claimed.add(label_path)
            if not label_path.is_file():
                writer.warn(source, "no label file; image skipped")
                continue
            try:
                image = _as_image(_read(image_path), image_path)
                label = _as_label(_read(label_path), label_path)
            except UnreadableFile as e:
                writer.warn(relative_source(e.path, native_dir), f"{e.reason}; pair skipped")
                continue
            if not sizes_match(image, label, source, writer, what="label"):
                continue
            writer.add_image(image, label_structures(label, LABELS, writer, source),
                             source=source)
        if label_dir.is_dir():
            warn_orphans((p for p in label_dir.iterdir() if p.suffix.lower() in (".mha", ".mhd")),
                         claimed, native_dir, writer, what="label")


SOURCE = Source(
    spec=SourceSpec(
        name="PSFHS",
        aliases=("PSFH", "pubic symphysis fetal head"),
        url="https://doi.org/10.1038/s41597-024-03266-4",
        citation="Chen G, Bai J, Ou Z, et al. PSFHS: Intrapartum ultrasound image dataset for "
                 "AI-based segmentation of pubic symphysis and fetal head. Scientific Data 11 "
                 "(2024) 436.",
        licence="CC-BY-4.0",
        anatomy="intrapartum pelvis / fetal head",
        structures=tuple(LABELS.values()),
        kind="2d",
        native_format="uncompressed MetaImage (.mha): 3-plane images, label maps 1 PS / 2 FH",
        us43d=False,
        real_sample_tests=True,
        notes="extra source standing in for FH-PS-AOP",
    ),
    convert=convert,
)
