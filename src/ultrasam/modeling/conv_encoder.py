"""A compact hierarchical convolutional image encoder for the small default model.

Why convolutions: trained from scratch on a few thousand ultrasound images, encoders with
convolutional inductive bias (locality, translation equivariance) and a hierarchy of
resolutions learn far faster than a plain ViT, and run in a fraction of its time on a CPU.

Layout (ConvNeXt-style stages, FPN-like top-down merge), for an S x S input and stem stride p:

1. ``stem``: p x p convolution with stride p, then channels-first LayerNorm -> B x C0 x S/p.
2. ``stages[i]``: ``depths[i]`` :class:`ConvNeXtBlock` (depthwise k x k conv, LayerNorm,
   pointwise MLP, per-channel layer scale, residual) at width ``dims[i]``; before every stage
   but the first, ``downsamples[i - 1]`` halves the resolution (LayerNorm + 2 x 2 stride-2
   conv). Stage i runs at S / (p * 2**i).
3. ``lateral[i]``: 1 x 1 projection of every stage to ``out_chans``; top-down, each coarser
   map is upsampled (nearest, x2) and added to the next finer one, so fine detail (stage 0)
   and context (the deepest stage) meet at the stem's resolution.
4. ``neck``: one ConvNeXt block on the merged map and a final channels-first LayerNorm (SAM's
   embeddings are layer-normalised too) -> B x out_chans x S/p x S/p.

Everything is differentiable (no ``no_grad``). Parameter names are ours: SAM has no such
encoder; only the prompt encoder and mask decoder keep Meta's names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d


class ConvNeXtBlock(nn.Module):
    """depthwise conv -> LayerNorm -> Linear(C, rC) -> GELU -> Linear(rC, C) -> x gamma -> + x.

    x: B x C x H x W -> B x C x H x W. The pointwise part runs channels-last (B x H x W x C)
    so the two linear layers are plain matrix products.
    """

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 4.0,
                 layer_scale_init: float = 0.1) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)
        # Layer scale: each residual branch starts small, so a deep stack starts close to
        # identity and trains stably from scratch without warm-up tricks.
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)                # B x H x W x C
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvEncoder(nn.Module):
    """Images B x 3 x S x S (normalised, padded) -> embeddings B x out_chans x S/p x S/p.

    ``patch_size`` p: stem stride (the embedding's resolution); ``dims`` / ``depths``: width and
    block count of each stage; ``kernel_size``: depthwise kernel; ``mlp_ratio``: hidden width
    of the blocks' MLP relative to their width; ``out_chans``: embedding channels (the prompt
    encoder's ``embed_dim``).
    """

    def __init__(self, img_size: int, patch_size: int, dims: Sequence[int],
                 depths: Sequence[int], out_chans: int, kernel_size: int = 7,
                 mlp_ratio: float = 4.0, in_chans: int = 3) -> None:
        super().__init__()
        if len(dims) == 0 or len(dims) != len(depths):
            raise ValueError(f"dims and depths must have the same non-zero length, got "
                             f"{list(dims)} and {list(depths)}")
        stride = patch_size * 2 ** (len(dims) - 1)
        if img_size % stride:
            raise ValueError(f"img_size {img_size} is not a multiple of the deepest stride "
                             f"{stride}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size),
            LayerNorm2d(dims[0]))
        self.downsamples = nn.ModuleList(
            nn.Sequential(LayerNorm2d(dims[i - 1]),
                          nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2))
            for i in range(1, len(dims)))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(d, kernel_size, mlp_ratio) for _ in range(n)))
            for d, n in zip(dims, depths))
        self.lateral = nn.ModuleList(nn.Conv2d(d, out_chans, kernel_size=1) for d in dims)
        self.neck = nn.Sequential(ConvNeXtBlock(out_chans, kernel_size, mlp_ratio),
                                  LayerNorm2d(out_chans))
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"ConvEncoder expects B x C x {self.img_size} x {self.img_size}, "
                             f"got {tuple(x.shape)}")
        # 1-2. Stem and stages, keeping every stage's output (finest first).
        feats = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
            feats.append(x)
        # 3. Top-down merge: project every stage, upsample the coarser sum, add.
        y = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            y = self.lateral[i](feats[i]) + F.interpolate(y, scale_factor=2.0, mode="nearest")
        # 4. Mix the merged map once more and normalise like SAM's neck.
        return self.neck(y)


def _init_weights(module: nn.Module) -> None:
    # ConvNeXt's initialisation: truncated normal (std 0.02) weights, zero biases.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
