"""Prompt validation shared by the PyTorch ``Predictor`` and the torch-free ``OnnxPredictor``.

Numpy only (no torch), so the ONNX runtime can use it; every refusal is a
:class:`PromptError` whose message names the bad value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import UserInputError


class PromptError(UserInputError):
    """A prompt that does not fit the image (the message names the value)."""


def as_float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as float64, finite (the message names the argument)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise PromptError(f"{name} must be numeric, got {type(value).__name__}") from e
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{name} contains NaN or infinite values: {arr.tolist()}")
    return arr


def check_points(coords: Any, labels: Any, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """N x 2 xy pixels and N labels (1 foreground, 0 background) inside an (h, w) image."""
    if coords is None or labels is None:
        raise PromptError("point_coords and point_labels must be given together")
    c = as_float_array(coords, "point_coords")
    lab = np.asarray(labels)
    if c.ndim != 2 or c.shape[1] != 2:
        raise PromptError(f"point_coords must be N x 2 (x, y), got shape {c.shape}")
    if lab.ndim != 1 or lab.shape[0] != c.shape[0]:
        raise PromptError(f"point_labels must have shape ({c.shape[0]},), got {lab.shape}")
    if c.shape[0] == 0:
        raise PromptError("point_coords is empty")
    bad = sorted(set(np.unique(lab).tolist()) - {0, 1})
    if bad:
        raise PromptError(f"point_labels must be 1 (foreground) or 0 (background), got {bad}")
    h, w = size
    outside = [tuple(p) for p in c.tolist() if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
    if outside:
        raise PromptError(f"points outside the {w}x{h} image (x in [0, {w}], y in [0, {h}]): "
                         f"{outside}")
    return c, lab.astype(np.int64)


def check_box(box: Any, size: tuple[int, int]) -> np.ndarray:
    """One XYXY box inside an (h, w) image."""
    b = as_float_array(box, "box").reshape(-1)
    if b.shape != (4,):
        raise PromptError(f"box must be 4 numbers (x0, y0, x1, y1), got {b.size}")
    x0, y0, x1, y1 = b.tolist()
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box must have x1 > x0 and y1 > y0 (XYXY), got {b.tolist()}")
    h, w = size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise PromptError(f"box {b.tolist()} extends outside the {w}x{h} image")
    return b


def check_mask_input(mask: Any, size: int) -> np.ndarray:
    """1 x L x L low-res logits."""
    m = as_float_array(mask, "mask_input")
    if m.shape != (1, size, size):
        raise PromptError(f"mask_input must be 1 x {size} x {size} low-res logits, got {m.shape}")
    return m
