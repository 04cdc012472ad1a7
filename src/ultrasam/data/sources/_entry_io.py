"""Small steps shared by the converters that read through :class:`~._tree.NativeTree`.

Reading a :class:`~._tree.TreeEntry` (a file on disk or an archive member) with the shared 2D
readers of :mod:`._read`, turning label maps into per-structure masks with a warning for codes the
dataset does not define, rasterising polygons, and adding an image
with a warning (not a crash) when its masks do not fit it.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..coco import CocoWriter
from ._read import UnreadableFile, read_image, read_mask
from ._tree import TreeEntry


@contextlib.contextmanager
def local_file(entry: TreeEntry) -> Iterator[Path]:
    """A real file holding ``entry``'s bytes: the file itself, or a temporary copy of a member.

    Readers that need a path (OpenCV video, PIL via :mod:`._read`) use this; the temporary copy
    lives outside the native tree and is removed on exit.
    """
    if entry.file is not None:
        yield entry.file
        return
    suffix = "".join(Path(entry.name).suffixes[-2:]) or ".bin"
    with tempfile.TemporaryDirectory(prefix="ultrasam-") as tmp:
        path = Path(tmp) / f"member{suffix}"
        path.write_bytes(entry.read_bytes())
        yield path


def _read_entry(entry: TreeEntry, mask: bool) -> np.ndarray:
    try:
        with local_file(entry) as path:
            return read_mask(path) if mask else read_image(path)
    except UnreadableFile as e:
        raise UnreadableFile(entry.path, e.reason) from e
    except OSError as e:  # member that cannot be decompressed
        raise UnreadableFile(entry.path, str(e)) from e


def read_entry_image(entry: TreeEntry) -> np.ndarray:
    """``H x W`` or ``H x W x 3`` uint8 (see :func:`._read.read_image`); UnreadableFile names
    the entry's relative path."""
    return _read_entry(entry, mask=False)


def read_entry_mask(entry: TreeEntry) -> np.ndarray:
    """The mask as stored (see :func:`._read.read_mask`); UnreadableFile names the entry."""
    return _read_entry(entry, mask=True)


def binary_mask(mask: np.ndarray, level: int = 128) -> np.ndarray:
    """``H x W`` bool from a binary mask stored as {0, 1} or {0, 255} (grey or colour).

    Masks whose maximum is 1 are taken as 0/1; others are thresholded at ``level`` (anti-aliased
    or JPEG-compressed 0/255 masks). Colour masks use their brightest channel.
    """
    m = mask.max(axis=2) if mask.ndim == 3 else mask
    if m.dtype == bool:
        return m.copy()
    return m > 0 if m.max(initial=0) <= 1 else m >= level


def label_masks(labels: np.ndarray, codes: Mapping[int, str], writer: CocoWriter,
                file: str) -> dict[str, np.ndarray]:
    """Per-structure ``H x W`` bool masks from an integer label map.

    ``codes``: label value -> structure (several values may map to one structure; 0 is always
    background). Values absent from ``codes`` are reported with ``writer.warn(file, ...)`` and
    left out, never silently dropped.
    """
    masks: dict[str, np.ndarray] = {}
    for value, structure in codes.items():
        hit = labels == value
        masks[structure] = masks[structure] | hit if structure in masks else hit
    values = np.unique(labels)
    unknown = [v.item() for v in values if v != 0 and v.item() not in codes]
    if unknown:
        writer.warn(file, f"unknown label value(s) {unknown} (known: {sorted(codes)}); "
                          "those pixels are left out")
    return masks


def polygon_mask(polygons: Sequence[Sequence[Sequence[float]]],
                 shape: tuple[int, int]) -> np.ndarray:
    """``H x W`` bool union of filled polygons, each a sequence of ``(x, y)`` pixel points.

    Coordinates are rounded to the nearest pixel; points outside the image are clipped by the
    rasteriser. Raises ValueError for a polygon with fewer than 3 points.
    """
    canvas = np.zeros(shape, np.uint8)
    for poly in polygons:
        pts = np.asarray(poly, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise ValueError(f"a polygon needs >= 3 (x, y) points, got shape {pts.shape}")
        cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], 1)
    return canvas.astype(bool)


def add_or_warn(writer: CocoWriter, image: np.ndarray,
                masks: dict[str, np.ndarray | Sequence[np.ndarray]],
                file: str, **fields: Any) -> int | None:
    """``writer.add_image`` that turns a mask/image size mismatch into a warning naming ``file``.

    A structure's value may be a list of masks, one per separate annotation (see
    :meth:`~ultrasam.data.coco.CocoWriter.add_image`). Returns the image id, or None when the
    pair was skipped.
    """
    h, w = image.shape[:2]
    for name, value in masks.items():
        for m in [value] if isinstance(value, np.ndarray) else value:
            if m.shape != (h, w):
                writer.warn(file, f"mask {name!r} is {m.shape[1]}x{m.shape[0]} but the image "
                                  f"is {w}x{h}; pair skipped")
                return None
    return writer.add_image(image, masks, source=file, **fields)
