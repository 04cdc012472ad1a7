"""ASUS: spine ultrasound frames with segmentations, published as numpy arrays (OneDrive).

Native layout: ``DataArrays.zip`` (or its extracted folder) holding ``.npy`` stacks
``<name>_ultrasound.npy`` (N x H x W or N x H x W x 1, intensities in [0, 1]: multiplied by 255)
and ``<name>_segmentation.npy`` (same shape, 0/1). Both arrays are stored flipped on both image
axes relative to the scans' display orientation, so every frame is flipped back (rows and
columns). A stack is one sweep: ``group`` = ``<name>``, ``frame`` = index along the first axis.
All frames are kept: every frame of a stack is an annotated training frame.

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
from ._volumes import read_npy

_ROLE = re.compile(r"[_\-. ]*(segmentation|ultrasound|images?)[_\-. ]*", re.IGNORECASE)


def _stack(array: np.ndarray) -> np.ndarray:
    """N x H x W from N x H x W or N x H x W x 1; ValueError otherwise."""
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"expected an N x H x W(x1) stack, got shape {array.shape}")
    return array[:, ::-1, ::-1]


def _to_uint8(images: np.ndarray) -> np.ndarray:
    a = images.astype(np.float64)
    if a.max(initial=0.0) <= 1.0:  # stored in [0, 1]: the documented x255
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """One image per frame of every ultrasound stack with a matching segmentation stack."""
    images: dict[str, TreeEntry] = {}
    masks: dict[str, TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".npy"):
            key = _ROLE.sub("", e.stem) or e.stem
            (masks if "segmentation" in e.stem.lower() else images)[key] = e
        for key, img_e in sorted(images.items()):
            if key not in masks:
                writer.warn(img_e.path, "no '<name>_segmentation.npy' stack; skipped")
                continue
            try:
                stack = _to_uint8(_stack(read_npy(img_e.read_bytes())))
                seg = _stack(read_npy(masks[key].read_bytes()))
            except (ValueError, OSError) as e:
                writer.warn(img_e.path, f"cannot read the stack pair: {e}")
                continue
            if seg.shape != stack.shape:
                writer.warn(masks[key].path, f"segmentation {seg.shape} does not match the "
                                             f"ultrasound stack {stack.shape}; skipped")
                continue
            codes = np.rint(seg).astype(np.int64)
            if not np.array_equal(codes, seg):
                writer.warn(masks[key].path, "non-integer segmentation values rounded")
            label_masks(codes, {1: "spine"}, writer, masks[key].path)  # warns unknown codes
            for t in range(stack.shape[0]):
                add_or_warn(writer, np.ascontiguousarray(stack[t]),
                            {"spine": codes[t] == 1}, img_e.path, group=key, frame=t,
                            name_parts=(key,))


SOURCE = Source(
    spec=SourceSpec(
        name="ASUS",
        aliases=("ASUS spine",),
        url="https://onedrive.live.com/ (link published with the ASUS dataset; see UltraSam)",
        citation="ASUS spine ultrasound segmentation arrays, as cited by UltraSam "
                 "(Meyer et al., 2024)",
        licence="unknown — check upstream",
        anatomy="spine",
        structures=("spine",),
        kind="frames",
        native_format="DataArrays.zip of <name>_ultrasound.npy / <name>_segmentation.npy "
                      "stacks (N x H x W[x1]), flipped on both axes, images in [0, 1]",
    ),
    convert=convert,
)
