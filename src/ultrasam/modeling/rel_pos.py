"""SAM's decomposed relative-position maths, shared by both attention paths.

The plain path in :mod:`.image_encoder` materialises the bias with
:func:`decomposed_rel_pos_bias`; :mod:`.flex_attention` computes the same attention without it
but from the same per-axis embeddings (:func:`get_rel_pos`). Both import this module, which
imports neither (a helper two siblings need lives below them, not in one of them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) offset: q_size x k_size x C.

    ``rel_pos`` (L x C) is linearly resized when the grid differs from the one it was trained
    for (e.g. a 1024-px checkpoint used at another input size).
    """
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1),
                                size=max_rel_dist, mode="linear")
        rel_pos = resized.reshape(-1, max_rel_dist).permute(1, 0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * max(q_size / k_size, 1.0)
    relative = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return rel_pos[relative.long()]


def decomposed_rel_pos_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                            size: tuple[int, int]) -> torch.Tensor:
    """SAM's additive attention bias from decomposed (height, width) relative positions.

    q: (B*heads) x (H*W) x C unscaled queries. Returns (B*heads) x (H*W) x (H*W).
    """
    h, w = size
    rh = get_rel_pos(h, h, rel_pos_h)
    rw = get_rel_pos(w, w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(b, h * w, h * w)
