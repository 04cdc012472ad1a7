"""The documented small-component filter applied to every instance before splitting.

Rule: an instance (one connected component of one structure) is dropped when its pixel area is
under ``min_area(height, width)``::

    min_area = ceil(MIN_AREA_PX * (max(height, width) / REFERENCE_SIDE) ** 2)

i.e. **12 px at a 384-px longest side**, scaled with the image area so that a component dropped
at native resolution covers the same fraction of the image as one dropped in the shared corpus
(whose rule is "components under 12 px at the stored size, longest side 384"). The threshold is
never under 1 px. The filter is idempotent (running it twice drops nothing more), so the builder
applies it before writing each dataset and the split stage applies it again to corpora built
elsewhere. Such specks are annotation noise (anti-aliasing, JPEG ringing, stray clicks), not
structures a user would prompt for.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MIN_AREA_PX = 12
REFERENCE_SIDE = 384


def min_area(height: int, width: int, min_area_px: int = MIN_AREA_PX,
             reference_side: int = REFERENCE_SIDE) -> int:
    """Smallest kept component area (pixels) for an image of ``height`` x ``width``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if min_area_px < 0 or reference_side <= 0:
        raise ValueError(f"bad filter parameters min_area_px={min_area_px}, "
                         f"reference_side={reference_side}")
    scale = (max(height, width) / reference_side) ** 2
    return max(1, math.ceil(min_area_px * scale)) if min_area_px > 0 else 0


@dataclass
class FilterReport:
    """What the filter dropped: instance counts per dataset and per structure."""

    min_area_px: int = MIN_AREA_PX
    reference_side: int = REFERENCE_SIDE
    dropped_per_dataset: Counter[str] = field(default_factory=Counter)
    dropped_per_structure: Counter[str] = field(default_factory=Counter)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_per_dataset.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": (f"drop components with area < ceil({self.min_area_px} * "
                     f"(max(h, w) / {self.reference_side})^2) px"),
            "min_area_px": self.min_area_px, "reference_side": self.reference_side,
            "dropped": self.dropped,
            "dropped_per_dataset": dict(sorted(self.dropped_per_dataset.items())),
            "dropped_per_structure": dict(sorted(self.dropped_per_structure.items())),
        }


def keep_annotation(annotation: dict[str, Any], image: dict[str, Any],
                    min_area_px: int = MIN_AREA_PX, reference_side: int = REFERENCE_SIDE) -> bool:
    """Whether a COCO annotation survives the filter for its image record (``height``/``width``)."""
    threshold = min_area(int(image["height"]), int(image["width"]), min_area_px, reference_side)
    return int(annotation.get("area", 0)) >= threshold


def filter_annotations(
    images: list[dict[str, Any]],
    annotations: list[dict[str, Any]],
    dataset: str,
    report: FilterReport,
    structure_of: dict[int, str] | None = None,
) -> list[dict[str, Any]]:
    """Annotations that pass the filter, in their original order; drops are counted in ``report``.

    ``structure_of`` maps category id -> structure name for files whose annotations lack a
    ``structure`` field (the shared corpus).
    """
    by_id = {im["id"]: im for im in images}
    kept = []
    for a in annotations:
        image = by_id.get(a["image_id"])
        if image is None:
            raise ValueError(f"{dataset}: annotation {a.get('id')} refers to missing image "
                             f"{a['image_id']}")
        if keep_annotation(a, image, report.min_area_px, report.reference_side):
            kept.append(a)
        else:
            structure = a.get("structure") or (structure_of or {}).get(a["category_id"], "?")
            report.dropped_per_dataset[dataset] += 1
            report.dropped_per_structure[structure] += 1
    return kept
