"""Work items of a batch, and where each one's outputs go.

An item is one 2D image (a file, a DICOM frame or a volume slice) with the prompts of one or
more objects. Its outputs live under ``out/<key>.*``, where ``key`` mirrors the item's path
relative to the deepest folder shared by every input of the batch, so two files with the same
name in different folders never collide.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .prompts import Prompt

_MULTI_SUFFIXES = (".nii.gz",)


@dataclass
class CocoRef:
    """Where an item's objects came from in a COCO input (ids are carried into the results)."""

    image_id: int
    annotation_ids: list[int]
    category_ids: list[int]


@dataclass
class Item:
    """One image to segment: ``path`` (+ ``frame`` of a cine / ``slice`` along ``axis`` of a
    volume) and one prompt per object. ``key`` is set by :func:`assign_keys`."""

    path: Path
    prompts: list[Prompt]
    frame: int | None = None
    slice: int | None = None
    axis: int = 0
    id: str | None = None
    coco: CocoRef | None = None
    key: str = ""
    index: int = 0
    problems: list[str] = field(default_factory=list)  # input errors found while reading

    def where(self) -> tuple[str, int | None, int | None, int]:
        """What identifies the image inside its file (items with equal ``where`` merge)."""
        return (os.path.normcase(os.path.abspath(self.path)), self.frame, self.slice, self.axis)

    def label(self) -> str:
        """Short human name: ``path`` plus frame/slice when given."""
        extra = ""
        if self.frame is not None:
            extra = f" frame {self.frame}"
        elif self.slice is not None:
            extra = f" slice {self.slice} (axis {self.axis})"
        return f"{self.path}{extra}"

    def as_request(self) -> dict[str, Any]:
        """The item's part of a record's ``request`` (what must match to skip it on a rerun)."""
        d: dict[str, Any] = {"image": str(self.path), "frame": self.frame, "slice": self.slice,
                             "axis": self.axis, "prompts": [p.as_dict() for p in self.prompts]}
        if self.coco is not None:
            d["coco"] = {"image_id": self.coco.image_id,
                         "annotation_ids": self.coco.annotation_ids,
                         "category_ids": self.coco.category_ids}
        return d


def strip_image_suffix(name: str, full: bool = False) -> str:
    """``scan.png`` -> ``scan``, ``vol.nii.gz`` -> ``vol``; ``full`` keeps the whole name."""
    if full:
        return name
    lower = name.lower()
    for ext in _MULTI_SUFFIXES:
        if lower.endswith(ext):
            return name[: -len(ext)]
    stem, dot, _ = name.rpartition(".")
    return stem if dot and stem else name


def _suffix(item: Item) -> str:
    """``.frameK`` / ``.sliceK`` (``.axisA.sliceK`` off axis 0) so frames do not overwrite."""
    if item.frame is not None:
        return f".frame{item.frame}"
    if item.slice is not None:
        return (f".axis{item.axis}" if item.axis else "") + f".slice{item.slice}"
    return f".axis{item.axis}" if item.axis else ""


def common_root(paths: list[Path]) -> Path:
    """The deepest folder holding every path (the inputs' own folder for a single file)."""
    parents = [os.path.dirname(os.path.abspath(p)) for p in paths]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def assign_keys(items: list[Item]) -> None:
    """Give each item its output key (relative, '/'-separated, no extension), unique in the batch.

    Files of one folder that differ only by extension (``a.png``, ``a.jpg``) keep their full
    names in the key (``a.png``, ``a.jpg``).
    """
    root = common_root([it.path for it in items])

    def key(item: Item, full: bool) -> str:
        rel = Path(os.path.relpath(os.path.abspath(item.path), root))
        return (rel.parent / strip_image_suffix(rel.name, full)).as_posix() + _suffix(item)

    first = [key(it, False) for it in items]
    counts = Counter(first)
    keys = [key(it, True) if counts[k] > 1 else k for it, k in zip(items, first)]
    seen: dict[str, Item] = {}
    for item, k in zip(items, keys):
        if k in seen:  # same file and frame/slice reached twice: merged before, so unexpected
            raise ValueError(f"two inputs map to the same output {k!r}: "
                             f"{seen[k].label()} and {item.label()}")
        seen[k] = item
        item.key = k
