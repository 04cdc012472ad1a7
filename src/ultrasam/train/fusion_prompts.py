"""Batched prompt simulation for early-fusion training: boxes, clicks and corrective clicks.

All coordinates are pixels of the S x S training frame. A batch carries every prompt kind as
padded tensors so one forward pass serves a mixed batch: points B x N x 2 with labels B x N
(-1 = padding), boxes B x 4 with a box of -1s meaning "no box" (it rasterises to empty maps).

Clicks follow the interactive-segmentation convention (RITM, the NoC protocol): a corrective
click goes to the interior-most pixel of the larger error region, positive in a missed region
and negative in a false one — the evaluation's own rule (``evaluate.prompts.corrective_click``),
so training and the NoC protocol click alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..evaluate.prompts import corrective_click, interior_distance, mask_box_xyxy

NO_BOX = -1.0


@dataclass
class PromptBatch:
    """coords B x N x 2 float, labels B x N int64 (-1 padding), boxes B x 4 float (-1s: none)."""

    coords: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor

    def with_click(self, xy: np.ndarray, label: np.ndarray, valid: np.ndarray) -> PromptBatch:
        """Append one click per row (xy B x 2, label B, rows with ``valid`` False get padding)."""
        c = torch.as_tensor(xy, dtype=torch.float32)[:, None]
        lab = torch.as_tensor(np.where(valid, label, -1), dtype=torch.int64)[:, None]
        return PromptBatch(torch.cat([self.coords, c], 1), torch.cat([self.labels, lab], 1),
                           self.boxes)


def interior_click(region: np.ndarray, rng: np.random.Generator, spread: float = 0.0
                   ) -> tuple[np.ndarray, float]:
    """A click inside ``region``: the interior-most pixel (``spread`` 0) or a random pixel whose
    depth is at least ``(1 - spread)`` x the maximum. Returns (xy (2,), max depth)."""
    d = interior_distance(region)
    top = float(d.max())
    if top <= 0:
        return np.zeros(2), 0.0
    rows, cols = np.nonzero(d >= top * (1.0 - spread) - 1e-6)
    k = int(rng.integers(rows.size))
    return np.array([cols[k], rows[k]], dtype=np.float64), top


def initial_prompts(masks: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                    p_box: float = 0.5, box_jitter: float = 0.05, p_multi: float = 0.2
                    ) -> tuple[PromptBatch, np.ndarray]:
    """First prompts for B masks (B x S x S bool) inside valid regions (B x S x S bool).

    Box prompts (probability ``p_box``): the mask's box, each side moved by U(-j, j) x its
    length on half of them. Point prompts: one positive click (interior-most on half of them,
    else a random deep pixel); with ``p_multi``, 1-3 positives and 0-2 negatives (negatives
    drawn from the background near the object). Returns (prompts, is_box B bool).
    """
    b, s = masks.shape[0], masks.shape[1]
    is_box = rng.random(b) < p_box
    boxes = np.full((b, 4), NO_BOX, np.float64)
    clicks: list[list[tuple[float, float, int]]] = []
    for i in range(b):
        m = masks[i]
        if is_box[i]:
            x0, y0, x1, y1 = mask_box_xyxy(m)
            if rng.random() < 0.5:
                w, h = x1 - x0, y1 - y0
                x0, x1 = x0 + rng.uniform(-box_jitter, box_jitter) * w, \
                    x1 + rng.uniform(-box_jitter, box_jitter) * w
                y0, y1 = y0 + rng.uniform(-box_jitter, box_jitter) * h, \
                    y1 + rng.uniform(-box_jitter, box_jitter) * h
            x0, x1 = np.clip([min(x0, x1 - 1), max(x1, x0 + 1)], 0, s)
            y0, y1 = np.clip([min(y0, y1 - 1), max(y1, y0 + 1)], 0, s)
            boxes[i] = (x0, y0, x1, y1)
            clicks.append([])
            continue
        row: list[tuple[float, float, int]] = []
        n_pos, n_neg = 1, 0
        if rng.random() < p_multi:
            n_pos, n_neg = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        for k in range(n_pos):
            xy, _ = interior_click(m, rng, spread=0.0 if (k == 0 and rng.random() < 0.5)
                                   else 0.7)
            row.append((xy[0], xy[1], 1))
        if n_neg:
            x0, y0, x1, y1 = mask_box_xyxy(m)
            pad_x, pad_y = 0.5 * (x1 - x0) + 4, 0.5 * (y1 - y0) + 4
            near = np.zeros_like(m)
            near[int(max(0, y0 - pad_y)):int(min(s, y1 + pad_y)),
                 int(max(0, x0 - pad_x)):int(min(s, x1 + pad_x))] = True
            bg = near & ~m & valid[i]
            ys, xs = np.nonzero(bg)
            for _ in range(n_neg if ys.size else 0):
                k = int(rng.integers(ys.size))
                row.append((float(xs[k]), float(ys[k]), 0))
        clicks.append(row)
    n = max(1, max(len(r) for r in clicks))
    coords = np.zeros((b, n, 2), np.float32)
    labels = np.full((b, n), -1, np.int64)
    for i, row in enumerate(clicks):
        for k, (x, y, lab) in enumerate(row):
            coords[i, k] = (x, y)
            labels[i, k] = lab
    return PromptBatch(torch.from_numpy(coords), torch.from_numpy(labels),
                       torch.as_tensor(boxes, dtype=torch.float32)), is_box


def corrective_clicks(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One corrective click per row: pred, gt, valid B x S x S bool.

    Returns (xy B x 2, label B (1 in a missed region, 0 in a false one), ok B: False where the
    prediction has no error left).
    """
    b = pred.shape[0]
    xy = np.zeros((b, 2))
    label = np.zeros(b, np.int64)
    ok = np.zeros(b, bool)
    for i in range(b):
        # The evaluation protocol's rule, on the valid (unpadded) region.
        click = corrective_click(pred[i] & valid[i], gt[i], rng)
        if click is not None:
            xy[i], label[i], ok[i] = click[0], click[1], True
    return xy, label, ok
