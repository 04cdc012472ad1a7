"""ACOUSLIC-AI: blind-sweep fetal abdominal ultrasound (grand-challenge ACOUSLIC-AI 2024).

Native layout: MetaImage sweeps ``images/stacked_fetal_ultrasound/<uuid>.mha`` (frames x H x W,
uint8) and masks with the same file name under a ``masks`` folder
(``masks/stacked_fetal_abdomen/<uuid>.mha``). Mask codes: 1 = fetal abdomen in an optimal plane,
2 = in a suboptimal plane; both are the fetal abdomen, the code is kept as the image ``label``.

Each sweep is sliced along its first array axis (frames); only frames with an annotation are
kept: a sweep has ~840 frames and most show no abdomen, which would flood the corpus with
near-identical negatives. ``group`` is the sweep id (one subject per sweep).

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
from ._tree import NativeTree, TreeEntry
from ._volumes import read_metaimage, volume_to_uint8

_PLANE = {1: "optimal", 2: "suboptimal"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """One image per annotated frame of every sweep that has a mask."""
    images: dict[str, TreeEntry] = {}
    masks: dict[str, TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".mha"):
            target = masks if "masks" in (p.lower() for p in e.parts[:-1]) else images
            target[e.stem] = e
        for sweep, img_e in sorted(images.items()):
            if sweep not in masks:
                writer.warn(img_e.path, "no mask sweep with the same name; skipped")
                continue
            try:
                video = volume_to_uint8(read_metaimage(img_e.read_bytes()).array)
                labels = read_metaimage(masks[sweep].read_bytes()).array
            except (ValueError, OSError) as e:
                writer.warn(img_e.path, f"cannot read sweep or mask: {e}")
                continue
            if video.ndim != 3 or labels.shape != video.shape:
                writer.warn(masks[sweep].path, f"mask shape {labels.shape} does not match the "
                                               f"sweep {video.shape}; skipped")
                continue
            _ = label_masks(labels, {1: "fetal_abdomen", 2: "fetal_abdomen"}, writer,
                            masks[sweep].path)  # one warning per sweep for unknown codes
            for t in np.flatnonzero(np.isin(labels, (1, 2)).any(axis=(1, 2))):
                frame = labels[t]
                plane = _PLANE[int(frame[np.isin(frame, (1, 2))].max())]
                add_or_warn(writer, video[t], {"fetal_abdomen": np.isin(frame, (1, 2))},
                            img_e.path, group=sweep, frame=int(t), label=plane,
                            name_parts=(sweep,))


SOURCE = Source(
    spec=SourceSpec(
        name="ACOUSLIC",
        aliases=("ACOUSLIC-AI", "ACOUSLIC_AI"),
        url="https://acouslic-ai.grand-challenge.org/",
        citation="ACOUSLIC-AI challenge: Abdominal Circumference Operator-agnostic UltraSound "
                 "measurement in Low-Income Countries (MICCAI 2024), "
                 "acouslic-ai.grand-challenge.org",
        licence="unknown — check upstream (challenge data terms)",
        anatomy="fetal abdomen",
        structures=("fetal_abdomen",),
        kind="3d",
        native_format="MetaImage .mha sweeps (frames x H x W) + masks with the same name under "
                      "'masks'; 1 optimal / 2 suboptimal fetal abdomen",
        notes="label = 'optimal' when the frame carries code 1, else 'suboptimal'; only annotated "
              "frames are kept",
    ),
    convert=convert,
)
