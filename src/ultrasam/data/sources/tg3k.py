"""TG3K: thyroid gland sweeps (TN3K bundle, TRFE-Net).

Official layout::

    tg3k/thyroid-image/NNNN.jpg, tg3k/thyroid-mask/NNNN.jpg, tg3k/tg3k-trainval.json

``tg3k-trainval.json`` is ``{"train": [...], "val": [...]}``: indices into the image names sorted
by number (which equal the frame numbers in the release). Shared copy (processed: 256 x 256, every
second frame, an uploader's own train/val/test folders, which are *not* an official split)::

    data/processed/{image,mask}/{train,val,test}/NNNN.jpg

Masks are JPEG: thresholded at 128. Images are consecutive frames of sweeps with no subject id:
``group`` stays None and the frame number is kept (``frame``), so that a corpus can group
neighbouring frames.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import read_matched_pair
from ._read import find_dirs, natural_sorted, relative_source, threshold

STRUCTURE = "thyroid_gland"
_SUFFIXES = (".jpg", ".jpeg", ".png")


def _official_splits(tg3k_dir: Path, names: list[str]) -> dict[str, str]:
    """{image name: train/val} from ``tg3k-trainval.json`` (indices into sorted names)."""
    path = tg3k_dir / "tg3k-trainval.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for split in ("train", "val"):
        for i in data.get(split, []):
            if isinstance(i, int) and 0 <= i < len(names):
                out[names[i]] = split
            elif isinstance(i, str):
                out[Path(i).name] = split
    return out


def _pairs(native_dir: Path) -> list[tuple[Path, Path, str | None]]:
    """(image, mask, official split) for both layouts."""
    pairs: list[tuple[Path, Path, str | None]] = []
    for image_dir in find_dirs(native_dir, "thyroid-image"):  # official
        mask_dir = image_dir.parent / "thyroid-mask"
        images = natural_sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _SUFFIXES)
        splits = _official_splits(image_dir.parent, [p.name for p in images])
        pairs += [(p, mask_dir / p.name, splits.get(p.name)) for p in images]
    for image_root in find_dirs(native_dir, "image"):  # processed copy
        mask_root = image_root.parent / "mask"
        if not mask_root.is_dir():
            continue
        images = natural_sorted(p for p in image_root.rglob("*") if p.suffix.lower() in _SUFFIXES)
        pairs += [(p, mask_root / p.relative_to(image_root), None) for p in images]
    return pairs


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every TG3K frame under ``native_dir`` with its thresholded gland mask."""
    native_dir = Path(native_dir)
    for image_path, mask_path, split in _pairs(native_dir):
        source = relative_source(image_path, native_dir)
        read = read_matched_pair(image_path, mask_path, native_dir, writer)
        if read is None:
            continue
        image, gland = read[0], threshold(read[1], 128)
        frame = int(image_path.stem) if image_path.stem.isdigit() else None
        writer.add_image(image, {STRUCTURE: gland}, source=source, split=split, frame=frame)


SOURCE = Source(
    spec=SourceSpec(
        name="TG3K",
        aliases=("tg3k", "TG-3K"),
        url="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation",
        citation="Gong H, Chen G, Wang R, et al. Multi-task learning for thyroid nodule "
                 "segmentation with thyroid region prior. ISBI 2021.",
        licence="research use; cite the paper",
        anatomy="thyroid",
        structures=(STRUCTURE,),
        kind="frames",
        native_format="JPEG frames; JPEG masks (threshold at 128); tg3k-trainval.json",
        real_sample_tests=True,
        notes="frames of sweeps: group None, frame number kept; the processed copy's folders "
              "are not an official split",
    ),
    convert=convert,
)
