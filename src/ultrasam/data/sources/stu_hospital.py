"""STU-Hospital breast ultrasound (github xbhlk/STU-Hospital).

Layout: ``Hospital/Test_Image_k.png`` (128 x 128 grey) + ``Hospital/mask_k.png`` (larger,
anti-aliased grey). The mask is thresholded at 128 at its own resolution, then resized with
nearest neighbour to the image, so that the lesion keeps a hard edge and the image its pixels.

Overlays checked: neither the 8 native-sample images nor their masks carry text or marks; masks
hold one region each.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import matched_pairs
from ._read import natural_sorted, resize_nearest, threshold

STRUCTURE = "breast_lesion"
_IMAGE = re.compile(r"^Test_Image_(?P<k>\d+)$", re.IGNORECASE)
_MASK = re.compile(r"^mask_\d+$", re.IGNORECASE)


def _mask_path(image_path: Path) -> Path:
    """``Test_Image_k.png`` -> ``mask_k.png`` beside it."""
    k = _IMAGE.match(image_path.stem)["k"]  # type: ignore[index]
    return image_path.with_name(f"mask_{k}{image_path.suffix}")


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every ``Test_Image_k.png`` under ``native_dir`` with ``mask_k.png``."""
    native_dir = Path(native_dir)
    pngs = [p for p in native_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".png"]
    pairs = matched_pairs(natural_sorted(p for p in pngs if _IMAGE.match(p.stem)), _mask_path,
                          native_dir, writer, orphans=(p for p in pngs if _MASK.match(p.stem)),
                          check_size=False)
    for _image_path, source, image, raw in pairs:
        lesion = threshold(raw, 128)
        h, w = image.shape[:2]
        if lesion.shape[0] * w != lesion.shape[1] * h:
            # Resizing is only legitimate between sizes of the same aspect ratio.
            writer.warn(source, f"mask {lesion.shape} and image {(h, w)} differ in aspect "
                                "ratio; pair skipped")
            continue
        writer.add_image(image, {STRUCTURE: resize_nearest(lesion, (h, w))}, source=source)


SOURCE = Source(
    spec=SourceSpec(
        name="STU-Hospital",
        aliases=("STU_Hospital", "STU Hospital"),
        url="https://github.com/xbhlk/STU-Hospital",
        citation="STU-Hospital breast ultrasound dataset, https://github.com/xbhlk/STU-Hospital "
                 "(cite the repository as it asks).",
        licence="none stated",
        anatomy="breast",
        structures=(STRUCTURE,),
        kind="2d",
        native_format="128x128 PNG images; larger anti-aliased PNG masks",
        real_sample_tests=True,
        notes="masks thresholded at 128 then resized (nearest) to the image",
    ),
    convert=convert,
)
