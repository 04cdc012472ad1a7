"""The typed sample every dataset returns (COCO files and packs alike) and its spacing field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Sample:
    """One image and its instances.

    ``image``: H x W x 3 uint8 RGB (grayscale replicated to 3 channels).
    ``masks``: N x H x W bool, one per instance (N may be 0).
    ``structures``: N structure names, aligned with ``masks``.
    ``spacing_mm``: (row, column) pixel spacing in millimetres at this image size, or None.
    """

    image: np.ndarray
    masks: np.ndarray
    structures: list[str]
    dataset: str
    image_id: int
    file_name: str
    group: str | None
    split: str | None
    spacing_mm: tuple[float, float] | None = None
    label: str | None = None


def spacing_of(record: dict[str, Any]) -> tuple[float, float] | None:
    """(row, column) mm per pixel from ``pixel_spacing_mm`` (a number or a pair), or None."""
    value = record.get("pixel_spacing_mm")
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(f"bad pixel_spacing_mm {value!r} for image {record.get('file_name')}")
