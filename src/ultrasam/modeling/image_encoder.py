"""SAM's ViT image encoder: patch embedding, windowed/global attention blocks, conv neck.

Parameter names follow Meta's ``ImageEncoderViT`` exactly (``patch_embed.proj``, ``pos_embed``,
``blocks.i.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,mlp.lin1,mlp.lin2}``,
``neck.{0,1,2,3}``) so Meta's state dicts load with ``strict=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, MLPBlock
from .flex_attention import rel_pos_attention
from .rel_pos import decomposed_rel_pos_bias


class Attention(nn.Module):
    """Multi-head self-attention over a B x H x W x C grid, with optional rel-pos bias.

    ``backend`` (also settable later as an attribute, see ``ultrasam.modeling.speed``):
    ``"sdpa"``, the default, uses ``scaled_dot_product_attention`` with the decomposed bias as an
    additive mask; ``"flex"``, ``"fold"`` and ``"auto"`` compute the same attention without
    materialising the bias (:mod:`ultrasam.modeling.flex_attention`).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, use_rel_pos: bool = True,
                 input_size: tuple[int, int] | None = None, backend: str = "sdpa") -> None:
        super().__init__()
        if backend not in ("sdpa", "flex", "fold", "auto"):
            raise ValueError(f"unknown attention backend {backend!r}")
        self.backend = backend
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required with relative positions")
            head_dim = dim // num_heads
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        # 1. Fused projection, split into (B*heads) x (H*W) x head_dim.
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        if self.use_rel_pos and self.backend != "sdpa":
            # 2'. The same attention without the (H*W) x (H*W) bias tensor.
            out = rel_pos_attention(q.view(b, self.num_heads, h * w, -1),
                                    k.view(b, self.num_heads, h * w, -1),
                                    v.view(b, self.num_heads, h * w, -1),
                                    self.rel_pos_h, self.rel_pos_w, (h, w), self.backend)
        else:
            # 2. Relative-position bias as an additive mask (computed from the unscaled
            # queries).
            bias = None
            if self.use_rel_pos:
                bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
                bias = bias.view(b, self.num_heads, h * w, h * w)
            # 4-D inputs (B x heads x L x d): with 3-D ones PyTorch's CPU SDPA falls back to
            # its unfused path (measured ~3x slower on a global ViT-B block).
            n = self.num_heads
            out = F.scaled_dot_product_attention(q.view(b, n, h * w, -1), k.view(b, n, h * w, -1),
                                                 v.view(b, n, h * w, -1), attn_mask=bias)
        # 3. Back to the grid and the output projection (reshape: the fused backends may
        # return a strided view).
        out = out.reshape(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B x H x W x C -> (B*nW) x window x window x C, zero-padding H and W up to a multiple."""
    b, h, w, c = x.shape
    pad_h = (window - h % window) % window
    pad_w = (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`, dropping the padding: B x H x W x C."""
    hp, wp = padded
    h, w = size
    b = windows.shape[0] // (hp * wp // window // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous()


class Block(nn.Module):
    """Transformer block; ``window_size`` 0 means global attention over the whole grid."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
                 input_size: tuple[int, int]) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias=True, use_rel_pos=True,
                              input_size=attn_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, padded = window_partition(x, self.window_size)
            x = self.attn(x)
            x = window_unpartition(x, self.window_size, padded, (h, w))
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> B x H x W x C (channels last, as SAM's blocks expect)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoderViT(nn.Module):
    """B x 3 x S x S normalised, padded images -> B x out_chans x S/16 x S/16 embeddings."""

    def __init__(self, img_size: int, patch_size: int, embed_dim: int, depth: int,
                 num_heads: int, mlp_ratio: float, out_chans: int, window_size: int,
                 global_attn_indexes: tuple[int, ...], in_chans: int = 3) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio,
                  window_size=0 if i in global_attn_indexes else window_size,
                  input_size=(grid, grid))
            for i in range(depth))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # Optional activation checkpointing (training memory); off by default.
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"image encoder expects B x 3 x {self.img_size} x {self.img_size}, "
                             f"got {tuple(x.shape)}")
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
