"""regPro (μ-RegPro): transrectal ultrasound prostate volumes with gland and landmark labels.

Native layout: ``train.zip`` / ``val.zip`` (read in place, also when nested in an outer archive
or already extracted) holding ``{train,val}/us_images/<case>.nii.gz`` and
``{train,val}/us_labels/<case>.nii.gz``; the MR volumes (``mr_images``, ``mr_labels``) are not
ultrasound and are skipped. Each label file is 4D: one binary volume per label channel,
``C x Z x Y x X`` slowest axis first (``_volumes.read_nifti``); channel 0 is the prostate gland,
the other channels are anatomical landmarks (united into ``prostate_landmark``; each connected
component still becomes its own instance).

Pairing fix: slice ``z`` of the image is annotated by ``label[c, z]`` for every channel ``c``.
The UltraSam reference zipped image slices with label *channels* (slice ``i`` with channel
``i``), which misaligned every mask. The channel axis is found as the label axis whose removal
leaves the image shape (axis 0 preferred, as documented). Slices with no label in any channel
are not converted. ``group`` = case id, ``split`` from the ``train`` / ``val`` folder. Channel
values other than 0/1 (255 is read as 1) are warned about.

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
from ._pairs import complete_pair, read_nifti_entry
from ._read import natural_key
from ._shapes import format_unknown
from ._tree import NativeTree, TreeEntry
from ._volumes import volume_to_uint8

SPEC = SourceSpec(
    name="regPro",
    aliases=("muRegPro", "mu-RegPro", "μ-RegPro", "RegPro"),
    url="https://muregpro.github.io",
    citation=("μ-RegPro: MICCAI 2023 challenge on MR to transrectal ultrasound registration for "
              "prostate cancer interventions (cite the data descriptor listed at "
              "muregpro.github.io)."),
    licence="unknown — check upstream",
    anatomy="prostate",
    structures=("prostate", "prostate_landmark"),
    kind="3d",
    native_format=("train.zip/val.zip of {train,val}/us_images/*.nii.gz + us_labels/*.nii.gz; "
                   "4D labels (channel, z, y, x)"),
    notes="Label channel c of slice z pairs with image slice z (the reference paired slice i "
          "with channel i).",
)

_ROLES = {"us_images": "image", "us_labels": "label"}
_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _nifti(entry: TreeEntry) -> bool:
    return entry.name.lower().endswith((".nii", ".nii.gz"))


def channels_first(label: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """``label`` as ``C x (image_shape)``; None when no axis of it is a channel axis.

    A 3D label of the image's shape is one channel. For 4D labels the channel axis is the one
    whose removal leaves ``image_shape``; axis 0 wins ties (the documented layout).
    """
    if label.shape == tuple(image_shape):
        return label[None]
    if label.ndim != len(image_shape) + 1:
        return None
    for axis in range(label.ndim):
        if label.shape[:axis] + label.shape[axis + 1:] == tuple(image_shape):
            return np.moveaxis(label, axis, 0)
    return None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a μ-RegPro tree (archives or folders) into ``writer``; see the module docstring."""
    pairs: dict[tuple[str, str, str], dict[str, TreeEntry]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(_nifti):
            if len(entry.parts) < 2:
                continue
            role = _ROLES.get(entry.parts[-2].lower())
            if role is None:
                continue  # mr_images, mr_labels and anything else
            split = next((_SPLITS[p.lower()] for p in reversed(entry.parts[:-2])
                          if p.lower() in _SPLITS), None)
            case = re.sub(r"\.nii(\.gz)?$", "", entry.name, flags=re.IGNORECASE)
            key = ("/".join(entry.parts[:-2]), split or "", case)
            pairs.setdefault(key, {})[role] = entry
        if not any("label" in p for p in pairs.values()):
            raise FileNotFoundError(f"no regPro ultrasound labels under {native_dir}: expected "
                                    "{train,val}/us_labels/*.nii.gz (in train.zip / val.zip)")
        for key in sorted(pairs, key=lambda k: (k[0], k[1], natural_key(k[2]))):
            entries = complete_pair(pairs[key].get("image"), pairs[key].get("label"), writer,
                                    mask_word="label")
            if entries is not None:
                _convert_case(*entries, key[2], key[1] or None, writer)


def _convert_case(image_entry: TreeEntry, label_entry: TreeEntry, case: str,
                  split: str | None, writer: CocoWriter) -> None:
    image = read_nifti_entry(image_entry, writer)
    if image is None:
        return
    raw = read_nifti_entry(label_entry, writer)
    if raw is None:
        return
    if image.ndim != 3:
        writer.warn(image_entry.path, f"expected a 3D volume, got shape {image.shape}; skipped")
        return
    label = channels_first(raw, image.shape)
    if label is None:
        writer.warn(label_entry.path, f"label shape {raw.shape} has no channel axis matching "
                                      f"image shape {image.shape}; skipped")
        return
    values, counts = np.unique(label, return_counts=True)
    unknown = {(int(v) if float(v).is_integer() else float(v)): int(n)
               for v, n in zip(values.tolist(), counts.tolist()) if v not in (0, 1, 255)}
    if unknown:
        writer.warn(label_entry.path, f"unexpected channel {format_unknown(unknown)}; only 1 "
                                      "(or 255) is foreground")
    foreground = np.isin(label, (1, 255))
    pixels = volume_to_uint8(image)
    for z in range(image.shape[0]):
        gland = foreground[0, z]
        landmarks = foreground[1:, z].any(axis=0) if label.shape[0] > 1 else np.zeros_like(gland)
        if not (gland.any() or landmarks.any()):
            continue
        masks = {"prostate": gland, "prostate_landmark": landmarks}
        writer.add_image(np.ascontiguousarray(pixels[z]), masks, source=image_entry.path,
                         group=case, split=split, slice_index=z, name_parts=(case,))


SOURCE = Source(spec=SPEC, convert=convert)
