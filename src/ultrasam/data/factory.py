"""The dataset factory: a path -> the reader that understands it (pack or COCO)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .dataset import CocoDataset
from .pack import PACK_JSON, PackDataset


def open_dataset(path: Path | str, split: str | None = None,
                 datasets: Sequence[str] | None = None) -> CocoDataset | PackDataset:
    """A :class:`PackDataset` for a pack folder or file, else a :class:`CocoDataset`."""
    path = Path(path)
    if (path.is_dir() and (path / PACK_JSON).is_file()) or path.name == PACK_JSON:
        return PackDataset(path if path.is_dir() else path.parent, split=split, datasets=datasets)
    return CocoDataset(path, split=split, datasets=datasets)
