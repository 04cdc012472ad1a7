"""SAM's attention with the decomposed relative-position bias, without the N x N bias tensor.

SAM adds to every attention score a bias that depends on the query and on the key's row and
column: for a query at grid cell (qh, qw) and a key at (kh, kw) of an H x W grid,

    bias[q, k] = rel_h[q, kh] + rel_w[q, kw],
    rel_h[q, kh] = <q_unscaled, Rh[qh, kh]>,   rel_w[q, kw] = <q_unscaled, Rw[qw, kw]>,

so per query only H + W numbers matter, while the materialised bias (what the plain
``scaled_dot_product_attention`` path in :mod:`.image_encoder` builds) has H*W of them per query:
for a global block at 1024 px that is 4096 x 4096 per head and image, ~400 MB in fp32, and it
keeps flash-attention kernels (which take no arbitrary additive mask) out of reach.

Backends of :func:`rel_pos_attention` (all compute the same function, only the order of
floating-point operations differs):

- ``"sdpa"``: the materialised bias as an additive mask (the encoder's default path, unchanged).
- ``"flex"``: FlexAttention with a ``score_mod`` that gathers ``rel_h[b, h, q, k // W]`` and
  ``rel_w[b, h, q, k % W]`` inside the fused kernel. Meant for CUDA, where it runs compiled
  (called from a compiled model, or through a cached ``torch.compile(flex_attention)`` when the
  caller is eager). On CPU it runs FlexAttention's unfused reference (correct, not faster), and
  FlexAttention has no CPU backward: use it on CPU for inference only.
- ``"fold"``: the bias folded into the dot product itself. With the one-hot row/column codes
  e_h(k), e_w(k) of each key, ``bias[q, k] = <[rel_h[q], rel_w[q]], [e_h(k), e_w(k)]>``, so
  ``q' = [q / sqrt(d), rel_h[q], rel_w[q]]`` and ``k' = [k, e_h(k), e_w(k)]`` give
  ``q' . k' = score + bias`` and any SDPA kernel (flash included) computes SAM's attention with
  ``scale=1``. It costs (d + H + W) / d times the attention FLOPs of a plain kernel (3x for a
  global ViT-B block, 64 + 64 + 64 channels) but no N x N tensor, works forward and backward on
  every device, and its gradient to ``rel_h`` / ``rel_w`` is a dense product (no atomics).
- ``"auto"``: ``"sdpa"`` on CPU (bit-for-bit the encoder's default) and ``"fold"`` on CUDA.
  The CUDA choice is provisional until ``benchmarks/bench_gpu.py`` has measured both fused
  backends on a GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from .rel_pos import decomposed_rel_pos_bias, get_rel_pos

Backend = Literal["auto", "sdpa", "flex", "fold"]
BACKENDS: tuple[str, ...] = ("auto", "sdpa", "flex", "fold")

# SDPA kernels want head dimensions that are multiples of 8 (16-byte rows in bf16/fp16).
_ALIGN = 8


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend for ``backend`` on ``device`` ("auto" resolved; others checked)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "fold" if device.type == "cuda" else "sdpa"
    return backend


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                  size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's decomposed relative-position terms of each query.

    q: ... x N x d unscaled queries, N = H*W in row-major grid order; rel_pos_h: (2H-1) x d,
    rel_pos_w: (2W-1) x d (resized as SAM does when the grid differs).
    Returns rel_h ... x N x H (one value per key row) and rel_w ... x N x W (per key column),
    computed with the same einsums as :func:`decomposed_rel_pos_bias`.
    """
    h, w = size
    *lead, n, d = q.shape
    if n != h * w:
        raise ValueError(f"queries have {n} positions but the grid {size} has {h * w}")
    rh = get_rel_pos(h, h, rel_pos_h)
    rw = get_rel_pos(w, w, rel_pos_w)
    r_q = q.reshape(-1, h, w, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return rel_h.reshape(*lead, n, h), rel_w.reshape(*lead, n, w)


def rel_pos_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, size: tuple[int, int],
                      backend: str = "auto") -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + SAM's decomposed rel-pos bias) v.

    q, k, v: B x heads x N x d, or (B*heads) x N x d, with N = H*W positions of an
    ``size`` = (H, W) grid in row-major order; q unscaled (the bias is computed from it, as in
    SAM). rel_pos_h: (2H-1) x d, rel_pos_w: (2W-1) x d. Returns the attention output with
    q's shape. ``backend``: see the module docstring.
    """
    if q.ndim not in (3, 4) or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must share a (B x heads x) N x d shape, got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if len(size) != 2 or size[0] * size[1] != q.shape[-2]:
        raise ValueError(f"grid size {size} does not match {q.shape[-2]} positions")
    backend = resolve_backend(backend, q.device)
    if backend == "sdpa":
        # Exactly the encoder's default path: the bias materialised as an additive mask.
        flat = q.reshape(-1, *q.shape[-2:])
        bias = decomposed_rel_pos_bias(flat, rel_pos_h, rel_pos_w, size)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(*q.shape[:-1], -1))
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, size)
    if backend == "fold":
        return _fold_attention(q, k, v, rel_h.to(q.dtype), rel_w.to(q.dtype), size)
    return _flex_rel_pos(q, k, v, rel_h, rel_w, size)


def _fold_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                    rel_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The bias as extra channels of q and k (see the module docstring); same shapes as q."""
    h, w = size
    *lead, n, d = q.shape
    width = d + h + w
    pad = -width % _ALIGN
    pos = torch.arange(n, device=q.device)
    # Key codes: one-hot of the key's row and column (exact in every dtype), zero padding.
    codes = torch.cat([F.one_hot(pos // w, h), F.one_hot(pos % w, w),
                       pos.new_zeros(n, pad)], dim=-1).to(k.dtype)
    q2 = torch.cat([q * d ** -0.5, rel_h, rel_w, q.new_zeros(*lead, n, pad)], dim=-1)
    k2 = torch.cat([k, codes.expand(*lead, n, h + w + pad)], dim=-1)
    if q.is_cuda:
        # Flash and cuDNN kernels need one head dimension for q, k and v: zero-pad v (the
        # padded output channels are exactly zero and dropped).
        out = F.scaled_dot_product_attention(q2, k2, F.pad(v, (0, width + pad - d)), scale=1.0)
        return out[..., :d]
    return F.scaled_dot_product_attention(q2, k2, v, scale=1.0)


@functools.cache
def _compiled_flex() -> Callable[..., torch.Tensor]:
    """FlexAttention compiled once per process (recompiled per shape by dynamo's cache)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_rel_pos(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
                  rel_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """FlexAttention with the bias gathered in ``score_mod``; same shapes as q."""
    from torch.nn.attention.flex_attention import flex_attention

    w = size[1]
    squeeze = q.ndim == 3
    if squeeze:  # FlexAttention wants B x heads x N x d; treat (B*heads) as the batch.
        q, k, v, rel_h, rel_w = (t.unsqueeze(1) for t in (q, k, v, rel_h, rel_w))

    def score_mod(score: torch.Tensor, b: torch.Tensor, head: torch.Tensor,
                  q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        # Key kv_idx sits at row kv_idx // W and column kv_idx % W of the grid.
        return score + rel_h[b, head, q_idx, kv_idx // w] + rel_w[b, head, q_idx, kv_idx % w]

    fn: Callable[..., torch.Tensor] = flex_attention
    if q.is_cuda and not torch.compiler.is_compiling():
        # Called from eager code: the fused kernel needs a compiled FlexAttention (uncompiled,
        # it materialises the scores, which is what this backend exists to avoid).
        fn = _compiled_flex()
    out = fn(q, k, v, score_mod=score_mod)
    return out.squeeze(1) if squeeze else out
