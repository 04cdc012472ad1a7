"""FH-PS-AOP: intrapartum transperineal ultrasound, pubic symphysis and fetal head (Zenodo).

Native layout: ``image_mha/NNNNN.mha`` (MetaImage, 3 x H x W: the same grey plane stored three
times, as an RGB export) and ``label_mha/NNNNN.mha`` (H x W, or 1 x H x W) with codes 1 pubic
symphysis, 2 fetal head. The first plane is the image; when the planes differ the three are kept
as colour. Unknown label codes are warned about. PSFHS (Scientific Data 2024) uses the same layout.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, label_masks
from ._read import natural_key
from ._tree import NativeTree, TreeEntry
from ._volumes import read_metaimage, volume_to_uint8

CODES = {1: "pubic_symphysis", 2: "fetal_head"}


def _image(array: np.ndarray) -> np.ndarray:
    """H x W (identical planes) or H x W x 3 uint8 from a 3 x H x W / H x W image array."""
    a = volume_to_uint8(array)
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[0] == 3:
        if (a[0] == a[1]).all() and (a[0] == a[2]).all():
            return np.ascontiguousarray(a[0])
        return np.ascontiguousarray(np.moveaxis(a, 0, -1))
    if a.ndim == 3 and a.shape[0] == 1:
        return np.ascontiguousarray(a[0])
    raise ValueError(f"expected 3 x H x W or H x W, got {a.shape}")


def convert_mha_pairs(native_dir: Path, writer: CocoWriter) -> None:
    """Pair ``image_mha/x.mha`` with ``label_mha/x.mha`` (shared with PSFHS)."""
    images: dict[str, TreeEntry] = {}
    labels: dict[str, TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".mha" and len(e.parts) >= 2):
            folder = e.parts[-2].lower()
            if folder == "image_mha":
                images[e.stem] = e
            elif folder == "label_mha":
                labels[e.stem] = e
        for stem in sorted(images, key=natural_key):
            img_e = images[stem]
            if stem not in labels:
                writer.warn(img_e.path, "no label_mha file with the same name; skipped")
                continue
            try:
                image = _image(read_metaimage(img_e.read_bytes()).array)
                lab = read_metaimage(labels[stem].read_bytes()).array
            except (ValueError, OSError) as e:
                writer.warn(img_e.path, f"cannot read the image/label pair: {e}")
                continue
            if lab.ndim == 3 and lab.shape[0] == 1:
                lab = lab[0]
            masks = label_masks(lab, CODES, writer, labels[stem].path)
            add_or_warn(writer, image, masks, img_e.path)


convert = convert_mha_pairs

SOURCE = Source(
    spec=SourceSpec(
        name="FH-PS-AOP",
        aliases=("FH_PS_AOP", "FHPSAOP", "PS-FH-AOP"),
        url="https://zenodo.org/records/10829116",
        citation="Lu et al., The JNU-IFM dataset for segmenting pubic symphysis-fetal head, "
                 "Data in Brief 41 (2022); FH-PS-AOP challenge (MICCAI 2023), Zenodo "
                 "10.5281/zenodo.10829116",
        licence="CC-BY-4.0 (Zenodo record) — check upstream",
        anatomy="intrapartum pelvic floor",
        structures=("pubic_symphysis", "fetal_head"),
        kind="2d",
        native_format="image_mha/*.mha (3 identical planes) + label_mha/*.mha (1 pubic "
                      "symphysis, 2 fetal head)",
    ),
    convert=convert,
)
