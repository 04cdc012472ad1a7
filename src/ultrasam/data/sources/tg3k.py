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

Overlays checked: the processed copy's masks carry burnt-in marks besides the gland — scanner
text glyphs of 6-42 px in the top corners of the full copy (6,828 of its 10,668 raw components),
and a pair of 3-7 px marks at the top-left or top-right corner of the scan in 11 of the 12 native
samples. Every component recognised as a corner mark (:mod:`._overlays`: under 0.25 % of the
image and confined to a top corner) is removed before the mask is written and counted under the
rule ``corner_mark``; the images themselves carry no text in the samples (the frames are cropped
to the scan). A malformed ``tg3k-trainval.json`` is warned about and the frames keep ``split``
None.
"""

from __future__ import annotations

from pathlib import Path

from ..coco import CocoWriter
from ._base import Source, SourceSpec
from ._pairs import read_matched_pair, warn_orphans
from ._overlays import MARK_RULE, remove_corner_marks
from ._read import find_dirs, natural_sorted, relative_source, threshold
from ._tables import read_json

STRUCTURE = "thyroid_gland"
_SUFFIXES = (".jpg", ".jpeg", ".png")


def _official_splits(tg3k_dir: Path, names: list[str], native_dir: Path,
                     writer: CocoWriter) -> dict[str, str]:
    """{image name: train/val} from ``tg3k-trainval.json`` (indices into sorted names); empty,
    after a warning naming the file, when it is malformed."""
    path = tg3k_dir / "tg3k-trainval.json"
    if not path.is_file():
        return {}
    name = relative_source(path, native_dir)
    data = read_json(path, name, writer.warn)
    if data is not None and not isinstance(data, dict):
        writer.warn(name, f"expected an object with train/val lists, got {type(data).__name__}; "
                          "file skipped")
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for split in ("train", "val"):
        entries = data.get(split, [])
        for i in entries if isinstance(entries, list) else []:
            if isinstance(i, int) and 0 <= i < len(names):
                out[names[i]] = split
            elif isinstance(i, str):
                out[Path(i).name] = split
    return out


def _pairs(native_dir: Path, writer: CocoWriter) -> list[tuple[Path, Path, str | None]]:
    """(image, mask, official split) for both layouts; masks without an image are warned about."""
    pairs: list[tuple[Path, Path, str | None]] = []
    mask_files: list[Path] = []
    for image_dir in find_dirs(native_dir, "thyroid-image"):  # official
        mask_dir = image_dir.parent / "thyroid-mask"
        images = natural_sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _SUFFIXES)
        splits = _official_splits(image_dir.parent, [p.name for p in images], native_dir, writer)
        pairs += [(p, mask_dir / p.name, splits.get(p.name)) for p in images]
        if mask_dir.is_dir():
            mask_files += [p for p in mask_dir.iterdir() if p.suffix.lower() in _SUFFIXES]
    for image_root in find_dirs(native_dir, "image"):  # processed copy
        mask_root = image_root.parent / "mask"
        if not mask_root.is_dir():
            continue
        images = natural_sorted(p for p in image_root.rglob("*") if p.suffix.lower() in _SUFFIXES)
        pairs += [(p, mask_root / p.relative_to(image_root), None) for p in images]
        mask_files += [p for p in mask_root.rglob("*") if p.suffix.lower() in _SUFFIXES]
    warn_orphans(mask_files, {m for _, m, _ in pairs}, native_dir, writer)
    return pairs


def convert(native_dir: Path, writer: CocoWriter) -> None:
    """Write every TG3K frame under ``native_dir`` with its thresholded gland mask."""
    native_dir = Path(native_dir)
    for image_path, mask_path, split in _pairs(native_dir, writer):
        source = relative_source(image_path, native_dir)
        read = read_matched_pair(image_path, mask_path, native_dir, writer)
        if read is None:
            continue
        image, gland = read[0], threshold(read[1], 128)
        gland, marks = remove_corner_marks(gland)
        writer.drop(MARK_RULE, STRUCTURE, marks)
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
