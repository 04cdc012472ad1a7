"""BUS_UC: breast ultrasound, benign and malignant lesions (Mendeley 3ksd7w7jkx).

Native layout: PNG pairs under ``{Benign,Malignant}/``; masks are the files with ``mask`` in their
path (``Benign/masks/01.png`` for ``Benign/images/01.png``), paired by file stem within the class.
``label`` = benign / malignant from the folder. Some masks are stored at another size than their
image: they are resized to the image (nearest neighbour), as the dataset's users do, with a
warning naming the file.

Overlays checked: no sample of this dataset was available here, so its masks were not inspected for
burnt-in text or marks; they pass through the small-component rule only
(:mod:`ultrasam.data.filters`).
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._entry_io import add_or_warn, binary_mask
from ._pairs import read_entry_pair
from ._read import natural_key, resize_nearest
from ._tree import NativeTree, TreeEntry

_LABELS = ("benign", "malignant")


def _label(e: TreeEntry) -> str | None:
    return next((p.lower() for p in e.parts[:-1] if p.lower() in _LABELS), None)


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Each image with the mask of the same stem in the same class folder."""
    images: dict[tuple[str | None, str], TreeEntry] = {}
    masks: dict[tuple[str | None, str], TreeEntry] = {}
    with NativeTree(native_dir, on_unreadable=writer.warn) as tree:
        for e in tree.files(lambda e: e.suffix == ".png"):
            stem = e.stem.lower().replace("_mask", "").replace("mask", "").strip(" _-")
            key = (_label(e), stem)
            target = masks if "mask" in e.path.lower() else images
            if key in target:
                writer.warn(e.path, f"same name as {target[key].path}; skipped")
                continue
            target[key] = e
        for key in sorted(images, key=lambda k: (k[0] or "", natural_key(k[1]))):
            img_e = images[key]
            if key not in masks:
                writer.warn(img_e.path, "no mask with the same name; skipped")
                continue
            read = read_entry_pair(img_e, masks[key], writer)
            if read is None:
                continue
            image, mask = read[0], binary_mask(read[1])
            if mask.shape != image.shape[:2]:
                writer.warn(masks[key].path, f"mask {mask.shape[1]}x{mask.shape[0]} resized to "
                                             f"the image {image.shape[1]}x{image.shape[0]}")
                mask = resize_nearest(mask, image.shape[:2])
            add_or_warn(writer, image, {"breast_lesion": mask}, img_e.path, label=key[0],
                        name_parts=(key[0] or "",))


SOURCE = Source(
    spec=SourceSpec(
        name="BUS_UC",
        aliases=("BUS-UC", "BUSUC"),
        url="https://data.mendeley.com/datasets/3ksd7w7jkx",
        citation="BUS_UC breast ultrasound dataset, Mendeley Data 10.17632/3ksd7w7jkx",
        licence="CC-BY-4.0 (Mendeley Data) — check upstream",
        anatomy="breast",
        structures=("breast_lesion",),
        kind="2d",
        native_format="{Benign,Malignant}/{images,masks}/*.png pairs; mask resized to the image",
    ),
    convert=convert,
)
