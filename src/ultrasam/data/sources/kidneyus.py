"""kidneyUS: the Open Kidney Ultrasound Data Set (B-mode kidney images, two sonographers).

Native layout: the PNG images (distributed after registration, e.g. ``labels/images/*.png`` or
an images archive anywhere in the tree) and the masks of the GitHub repository
``labels/reviewed_masks_{1,2}/{capsule,regions}/<image name>.png``, paired by file name.

Label codes (from the dataset's own mask-creation script, ``create_masks.py``):

* ``capsule`` masks: 1 = kidney capsule (the whole kidney outline, filled);
* ``regions`` masks: 1 = central echo complex, 2 = medulla, 3 = cortex.

Masks may also be stored as 0/255 (capsule) in re-saved copies: 255 is accepted as capsule too
(the UltraSam reference kept only pixels equal to 1, dropping such masks and, for ``regions``,
every class but the central echo complex). Other values are warned about, naming the file.
Each image comes with two sonographers' annotations; sonographer 1's masks are used, and
sonographer 2's only for an image sonographer 1 did not annotate, so that no image appears
twice. Each image is from a different patient, so ``group`` is null (one image, one group).

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
from ._read import IMAGE_SUFFIXES, UnreadableFile, natural_key
from ._shapes import (binary_mask_values, decode_image_bytes, decode_mask_bytes, format_unknown,
                      split_label_values)
from ._tree import NativeTree, TreeEntry

SPEC = SourceSpec(
    name="kidneyUS",
    aliases=("Open Kidney Ultrasound", "kidney_us", "OpenKidneyUS"),
    url="https://github.com/rsingla92/kidneyUS",
    citation=("Singla R, Ringstrom C, Hu G, Lessoway V, Reid J, Nguan C, Rohling R. The open "
              "kidney ultrasound data set. arXiv:2206.06657 (2022); ASMUS 2023."),
    licence="CC-BY-NC-SA (as stated in the repository README; registration required)",
    anatomy="kidney",
    structures=("kidney_capsule", "central_echo_complex", "renal_medulla", "renal_cortex"),
    kind="2d",
    native_format=("images/*.png + labels/reviewed_masks_{1,2}/{capsule,regions}/*.png; "
                   "capsule {0,1}, regions 0-3"),
    notes=("Region codes 1 central echo complex, 2 medulla, 3 cortex (create_masks.py of the "
           "release). Sonographer 1's masks are used; sonographer 2's only where 1 has none."),
)

_MASK_DIR = re.compile(r"^reviewed_masks_(\d+)$", re.IGNORECASE)
_REGIONS = {1: "central_echo_complex", 2: "renal_medulla", 3: "renal_cortex"}
_KINDS = ("capsule", "regions")


def _mask_role(entry: TreeEntry) -> tuple[int, str] | None:
    """(sonographer, "capsule"|"regions") for a mask file, None for other files."""
    parts = entry.parts
    if len(parts) < 3 or parts[-2].lower() not in _KINDS:
        return None
    m = _MASK_DIR.match(parts[-3])
    return (int(m.group(1)), parts[-2].lower()) if m else None


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Convert a kidneyUS tree into ``writer``; see the module docstring."""
    images: dict[str, TreeEntry] = {}
    masks: dict[str, dict[int, dict[str, TreeEntry]]] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for entry in tree.files(lambda e: e.suffix in IMAGE_SUFFIXES):
            role = _mask_role(entry)
            if role is not None:
                masks.setdefault(entry.name, {}).setdefault(role[0], {})[role[1]] = entry
            elif not any(_MASK_DIR.match(p) for p in entry.parts[:-1]):
                if entry.name in images:
                    writer.warn(entry.path, f"duplicate image name (first: "
                                            f"{images[entry.name].path}); ignored")
                    continue
                images[entry.name] = entry
        if not masks:
            raise FileNotFoundError(f"no kidneyUS masks under {native_dir}: expected "
                                    "labels/reviewed_masks_{1,2}/{capsule,regions}/*.png")
        for name in sorted(masks, key=natural_key):
            image_entry = images.get(name)
            if image_entry is None:
                first = next(iter(next(iter(masks[name].values())).values()))
                writer.warn(first.path, "no image of this name (images need registration)")
                continue
            sonographer = min(masks[name])
            _convert_image(image_entry, masks[name][sonographer], sonographer, writer)


def _convert_image(image_entry: TreeEntry, files: dict[str, TreeEntry], sonographer: int,
                   writer: CocoWriter) -> None:
    try:
        image = decode_image_bytes(image_entry.read_bytes(), image_entry.path)
    except (UnreadableFile, OSError) as e:
        writer.warn(image_entry.path, getattr(e, "reason", str(e)))
        return
    structures: dict[str, np.ndarray] = {}
    for kind in _KINDS:
        entry = files.get(kind)
        if entry is None:
            continue
        try:
            raw = decode_mask_bytes(entry.read_bytes(), entry.path)
        except (UnreadableFile, OSError) as e:
            writer.warn(entry.path, getattr(e, "reason", str(e)))
            continue
        grey = raw if raw.ndim == 2 else raw[..., :3].max(axis=2)
        if kind == "capsule":
            capsule, unknown = binary_mask_values(grey)
            structures["kidney_capsule"] = capsule
            expected = "1 (or 255)"
        else:
            regions, unknown = split_label_values(grey, _REGIONS)
            structures.update(regions)
            expected = "1-3"
        if unknown:
            writer.warn(entry.path, f"unknown {kind} {format_unknown(unknown)}; expected "
                                    f"{expected}")
    try:
        writer.add_image(image, structures, source=image_entry.path,
                         extra={"annotator": sonographer})
    except ValueError as e:
        writer.warn(image_entry.path, f"skipped: {e}")


SOURCE = Source(spec=SPEC, convert=convert)
