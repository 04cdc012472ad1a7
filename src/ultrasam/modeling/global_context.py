"""Global self-attention over a small feature grid, for FusionNet's deepest stage.

Why: a single click is ambiguous (a locule or the whole multilocular tumour? a nodule or the
cyst around it?) and deciding needs the whole scene, while a 3x3-convolution stack relates
distant parts of the image only weakly. At FusionNet's deepest stage the grid is tiny (8 x 8
tokens at 256 px), so full attention there costs well under a millisecond per prompt.

Each block is pre-norm (LayerNorm -> multi-head attention -> residual; LayerNorm -> MLP ->
residual) with a depthwise 3x3 convolution as positional encoding (resolution-free, as in
conditional positional encodings). Every residual branch's last layer starts at zero, so adding
blocks to a trained network leaves its outputs unchanged until training moves them — the
warm-start path from weights trained without them.

Attention is written with plain matmul / softmax so that ONNX export and bf16 autocast treat
it like any other layer.
"""

from __future__ import annotations

import torch
from torch import nn


class GlobalContextBlock(nn.Module):
    """B x C x H x W -> B x C x H x W; ``heads`` must divide ``dim``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}")
        self.heads = heads
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        for last in (self.pos, self.proj, self.mlp[2]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x + self.pos(x)
        t = x.flatten(2).transpose(1, 2)  # B x N x C
        q, k, v = self.qkv(self.norm1(t)).reshape(b, h * w, 3, self.heads, c // self.heads) \
            .permute(2, 0, 3, 1, 4)  # each B x heads x N x d
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5, dim=-1)
        t = t + self.proj((attn @ v).transpose(1, 2).reshape(b, h * w, c))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)
