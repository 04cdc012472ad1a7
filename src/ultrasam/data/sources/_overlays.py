"""Recognising marks burnt into masks that are not anatomy: text glyphs, markers, calipers.

Some public copies derived their masks from screenshots or re-exports that carried the scanner's
on-screen text (TG3K's processed copy: 6-42 px glyph fragments in the top corners of 256 x 256
masks, in about two thirds of the frames). They are not a structure a user would prompt for, and
a model trained on them learns to segment text. The rule here is geometric and checkable:

**Corner mark**: a connected component (8-connectivity) of a structure's mask that is small —
under ``MARK_MAX_FRACTION`` = 0.25 % of the image area (164 px at 256 x 256) — and lies entirely
inside a top corner of the image: its bounding box within the top ``CORNER_BAND`` = 25 % of the
rows and within the left or right 25 % of the columns. Scanner text (labels, depth, gain, probe
name) sits there; an organ or a lesion is never both that small and confined to a corner (the
rule removes none of the 1,899 TG3K instances of the shared corpus, checked by a test).

Sources opt in where their masks were found to carry such marks, and count what they remove
with :meth:`~ultrasam.data.coco.CocoWriter.drop` under the rule name ``MARK_RULE`` so that the
manifest's filter report includes it. Every source module says what was checked for its masks.
"""

from __future__ import annotations

import cv2
import numpy as np

MARK_MAX_FRACTION = 0.0025
CORNER_BAND = 0.25
MARK_RULE = "corner_mark"


def corner_marks(mask: np.ndarray, *, max_fraction: float = MARK_MAX_FRACTION,
                 band: float = CORNER_BAND) -> np.ndarray:
    """``H x W`` bool: the pixels of ``mask`` (``H x W`` bool) that belong to corner marks."""
    if mask.ndim != 2:
        raise ValueError(f"expected an H x W mask, got shape {mask.shape}")
    h, w = mask.shape
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                           connectivity=8)
    limit = max_fraction * h * w
    top, left, right = band * h, band * w, (1.0 - band) * w
    marks = [k for k in range(1, n)
             if stats[k, cv2.CC_STAT_AREA] < limit
             and stats[k, cv2.CC_STAT_TOP] + stats[k, cv2.CC_STAT_HEIGHT] <= top
             and (stats[k, cv2.CC_STAT_LEFT] + stats[k, cv2.CC_STAT_WIDTH] <= left
                  or stats[k, cv2.CC_STAT_LEFT] >= right)]
    return np.isin(labels, marks) if marks else np.zeros((h, w), bool)


def remove_corner_marks(mask: np.ndarray, **rule: float) -> tuple[np.ndarray, int]:
    """(``mask`` without its corner marks, number of mark components removed)."""
    marks = corner_marks(mask, **rule)
    if not marks.any():
        return mask, 0
    removed = cv2.connectedComponents(marks.astype(np.uint8), connectivity=8)[0] - 1
    return mask & ~marks, int(removed)
