"""The decoder's input layout (Meta's SAM ONNX contract), in numpy; prompt validation is
``ultrasam.inference.prompt_checks``, shared with the PyTorch ``Predictor`` (torch-free)."""

from __future__ import annotations

import numpy as np

from ..prompt_checks import check_box, check_mask_input, check_points

__all__ = ["check_box", "check_mask_input", "check_points", "decoder_tokens"]


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
