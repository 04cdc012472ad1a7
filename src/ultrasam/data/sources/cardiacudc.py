"""CardiacUDC: multi-centre echocardiography videos (Kaggle release of the GraphEcho dataset).

Native layout: ``<site>/<patient>_image.nii.gz`` videos and ``<site>/<patient>_label.nii.gz``
sparse label videos. Labels are drawn as *contours* only: each structure's region is recovered by
filling its contour's holes, frame by frame. Label codes follow the documented order of the
structures: 1 left ventricle, 2 left atrium, 3 right atrium, 4 right ventricle, 5 epicardium
(check upstream). Videos are read slowest axis first (frames x rows x columns); only frames with
a label are kept (annotation is sparse over each video). ``group`` = ``<site>/<patient>``.

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
from ._shapes import fill_holes
from ._tree import NativeTree, TreeEntry
from ._volumes import read_nifti, volume_to_uint8

CODES = {1: "left_ventricle", 2: "left_atrium", 3: "right_atrium", 4: "right_ventricle",
         5: "epicardium"}
_NAME = re.compile(r"^(?P<patient>.+?)_(?P<role>image|label)\.nii(\.gz)?$", re.IGNORECASE)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Every labelled frame of every ``_image`` video with a ``_label`` video, contours filled."""
    images: dict[tuple[str, str], TreeEntry] = {}
    labels: dict[tuple[str, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files():
            m = _NAME.match(e.name)
            if m:
                key = (e.parent, m.group("patient"))
                (labels if m.group("role").lower() == "label" else images)[key] = e
        for key in sorted(images):
            img_e = images[key]
            group = f"{key[0]}/{key[1]}" if key[0] else key[1]
            if key not in labels:
                writer.warn(img_e.path, "no _label file; skipped")
                continue
            try:
                video = volume_to_uint8(read_nifti(img_e.read_bytes()).array)
                lab = np.rint(read_nifti(labels[key].read_bytes()).array).astype(np.int64)
            except (ValueError, OSError) as e:
                writer.warn(img_e.path, f"cannot read the video pair: {e}")
                continue
            if video.ndim != 3 or lab.shape != video.shape:
                writer.warn(labels[key].path, f"label {lab.shape} does not match the video "
                                              f"{video.shape}; skipped")
                continue
            label_masks(lab, CODES, writer, labels[key].path)  # warns once about unknown codes
            for t in np.flatnonzero(np.isin(lab, list(CODES)).any(axis=(1, 2))):
                masks = {s: fill_holes(lab[t] == v) for v, s in CODES.items()}
                add_or_warn(writer, video[t], masks, img_e.path, group=group, frame=int(t),
                            name_parts=(key[1],))


SOURCE = Source(
    spec=SourceSpec(
        name="CardiacUDC",
        aliases=("Cardiac UDC", "CardiacUDA"),
        url="https://www.kaggle.com/datasets/xiaoweixumedicalai/cardiacudc-dataset",
        citation="Yang et al., GraphEcho: graph-driven unsupervised domain adaptation for "
                 "echocardiogram video segmentation, ICCV 2023",
        licence="unknown — check upstream (Kaggle dataset page)",
        anatomy="heart",
        structures=tuple(CODES.values()),
        kind="video",
        native_format="<site>/<patient>_{image,label}.nii.gz; contour-only labels 1 LV, 2 LA, "
                      "3 RA, 4 RV, 5 epicardium (holes filled)",
    ),
    convert=convert,
)
