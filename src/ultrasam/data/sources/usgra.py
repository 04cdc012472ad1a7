"""USGRA: ultrasound-guided regional anaesthesia nerves and vessels (usgra-seg, CC-BY-4.0).

Layout::

    dataset/images/NNNN.png, dataset/masks/NNNN.png            training images
    dataset/test/images/NNNN.png, dataset/test/masks/NNNN.png  the dataset's test split
    dataset/LICENSE

Masks are palette PNGs whose *indices* are the classes: 1 nerve, 2 blood vessel. ``split`` is
``test`` for the test folder and ``train`` otherwise. Not one of UltraSam's 43 datasets.

Overlays checked: the 12 native-sample palette masks hold nerve and vessel regions only, no text or
marks (their smallest region, a 350-px nerve at 512 x 512, is real anatomy).
"""

from __future__ import annotations

from pathlib import Path


from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import label_structures, matched_pairs, sizes_match
from ._read import IMAGE_SUFFIXES, find_dirs, natural_sorted

LABELS = {1: "nerve", 2: "blood_vessel"}


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every image of every ``images/`` + ``masks/`` folder pair under ``native_dir``."""
    native_dir = Path(native_dir)
    for image_dir in find_dirs(native_dir, "images"):
        mask_dir = image_dir.parent / "masks"
        if not mask_dir.is_dir():
            continue
        split = "test" if image_dir.parent.name.lower() == "test" else "train"
        pairs = matched_pairs(
            natural_sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            lambda image_path, masks=mask_dir: masks / image_path.name, native_dir, writer,
            orphans=(p for p in mask_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
            check_size=False)
        for _image_path, source, image, label in pairs:
            if label.ndim != 2:
                writer.warn(source, f"mask has shape {label.shape}, expected palette indices; "
                                    "pair skipped")
                continue
            if not sizes_match(image, label, source, writer):
                continue
            writer.add_image(image, label_structures(label, LABELS, writer, source),
                             source=source, split=split, name_parts=(split,))


SOURCE = Source(
    spec=SourceSpec(
        name="USGRA",
        aliases=("usgra-seg", "USGRA-seg"),
        url="https://github.com/tmkand/usgra-seg",
        citation="usgra-seg: ultrasound-guided regional anaesthesia nerve and vessel "
                 "segmentation dataset, https://github.com/tmkand/usgra-seg.",
        licence="CC-BY-4.0",
        anatomy="peripheral nerves and vessels (regional anaesthesia)",
        structures=tuple(LABELS.values()),
        kind="2d",
        native_format="PNG images; palette PNG masks (index 1 nerve, 2 vessel)",
        us43d=False,
        real_sample_tests=True,
        notes="extra source; test split from the dataset's test folder",
    ),
    convert=convert,
)
