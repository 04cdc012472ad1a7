"""Prompt validation (the rules and messages of ``ultrasam.predictor``) and the decoder's
input layout (Meta's SAM ONNX contract), in numpy.

The checks repeat ``ultrasam.predictor``'s because that module imports torch; both must stay
in step (the parity tests compare the two predictors on the same prompts).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_float_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric, got {type(value).__name__}") from e
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values: {arr.tolist()}")
    return arr


def check_points(coords: Any, labels: Any, size: tuple[int, int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """N x 2 xy pixels and N labels (1 foreground, 0 background) inside an (h, w) image."""
    if coords is None or labels is None:
        raise ValueError("point_coords and point_labels must be given together")
    c = as_float_array(coords, "point_coords")
    lab = np.asarray(labels)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"point_coords must be N x 2 (x, y), got shape {c.shape}")
    if lab.ndim != 1 or lab.shape[0] != c.shape[0]:
        raise ValueError(f"point_labels must have shape ({c.shape[0]},), got {lab.shape}")
    if c.shape[0] == 0:
        raise ValueError("point_coords is empty")
    bad = sorted(set(np.unique(lab).tolist()) - {0, 1})
    if bad:
        raise ValueError(f"point_labels must be 1 (foreground) or 0 (background), got {bad}")
    h, w = size
    outside = [tuple(p) for p in c.tolist() if not (0 <= p[0] <= w and 0 <= p[1] <= h)]
    if outside:
        raise ValueError(f"points outside the {w}x{h} image (x in [0, {w}], y in [0, {h}]): "
                         f"{outside}")
    return c, lab.astype(np.int64)


def check_box(box: Any, size: tuple[int, int]) -> np.ndarray:
    """One XYXY box inside an (h, w) image."""
    b = as_float_array(box, "box").reshape(-1)
    if b.shape != (4,):
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {b.size}")
    x0, y0, x1, y1 = b.tolist()
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must have x1 > x0 and y1 > y0 (XYXY), got {b.tolist()}")
    h, w = size
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(f"box {b.tolist()} extends outside the {w}x{h} image")
    return b


def check_mask_input(mask: Any, size: int) -> np.ndarray:
    m = as_float_array(mask, "mask_input")
    if m.shape != (1, size, size):
        raise ValueError(f"mask_input must be 1 x {size} x {size} low-res logits, got {m.shape}")
    return m


def decoder_tokens(coords: np.ndarray | None, labels: np.ndarray | None,
                   box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Model-frame points (N x 2), labels (N) and box (4) -> ``point_coords`` 1 x K x 2 and
    ``point_labels`` 1 x K float32: the points, then the box as corners labelled 2 / 3, or one
    padding point labelled -1 when there is no box (SAM's prompt encoder does the same). A
    prompt with neither points nor box gives K = 0 (a mask-only prompt has no tokens)."""
    xy: list[np.ndarray] = []
    lab: list[np.ndarray] = []
    if coords is not None and labels is not None:
        xy.append(np.asarray(coords, np.float64).reshape(-1, 2))
        lab.append(np.asarray(labels, np.float64).reshape(-1))
    if box is not None:
        xy.append(np.asarray(box, np.float64).reshape(2, 2))
        lab.append(np.array([2.0, 3.0]))
    elif xy:
        xy.append(np.zeros((1, 2)))
        lab.append(np.array([-1.0]))
    if not xy:
        return np.zeros((1, 0, 2), np.float32), np.zeros((1, 0), np.float32)
    return (np.concatenate(xy)[None].astype(np.float32),
            np.concatenate(lab)[None].astype(np.float32))
