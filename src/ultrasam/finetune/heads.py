"""Task heads over an encoder's feature list (finest first, see ``EncoderAdapter``).

- :class:`PooledLinearHead`: global average pooling of every scale, concatenated (a random or
  weakly trained encoder's deepest map alone can miss what its shallow ones hold), a
  parameter-free standardisation (BatchNorm without affine, as MAE's linear probe: an affine
  map at test time), dropout, one linear layer -> B x K logits.
- :class:`AttentionPoolHead`: one learned query attends over the tokens of every scale
  (layer-normed and projected to a common width), then LayerNorm, dropout and a linear layer.
- :class:`SegDecoder`: a light prompt-free FPN decoder: 1 x 1 lateral projections of every
  scale to D channels, top-down nearest upsampling and sums, two 3 x 3 conv-BN-ReLU layers at
  the finest scale, a 1 x 1 classifier -> B x K x S x S logits (bilinear to the input size).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

HEADS: tuple[str, ...] = ("linear", "attention")


class PooledLinearHead(nn.Module):
    """Features finest first (channels ``channels[i]``) -> B x K logits."""

    def __init__(self, channels: Sequence[int], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        total = int(sum(channels))
        # Cumulative (not exponential) running statistics, restarted every epoch by the loop:
        # exact over frozen features whatever their scale (a random-init encoder's are ~1e-3,
        # which an exponential average starting at 1 would take hundreds of steps to reach).
        self.norm = nn.BatchNorm1d(total, affine=False, momentum=None)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(total, n_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([f.float().mean(dim=(2, 3)) for f in feats], dim=1)  # B x sum(C)
        return self.fc(self.drop(self.norm(pooled)))


class AttentionPoolHead(nn.Module):
    """Features finest first -> B x K logits: every scale's tokens projected to ``width``
    (plus a learned scale embedding), one learned query attends over all of them."""

    def __init__(self, channels: Sequence[int], n_classes: int, dropout: float = 0.0,
                 width: int = 64, num_heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, width))
                                  for c in channels)
        self.scale_embed = nn.Parameter(torch.zeros(len(channels), width))
        self.query = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.trunc_normal_(self.query, std=0.02)
        nn.init.trunc_normal_(self.scale_embed, std=0.02)
        self.attn = nn.MultiheadAttention(width, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        tokens = torch.cat([proj(f.float().flatten(2).transpose(1, 2)) + self.scale_embed[i]
                            for i, (proj, f) in enumerate(zip(self.proj, feats))], dim=1)
        q = self.query.expand(tokens.shape[0], -1, -1)          # tokens: B x N x width
        pooled, _ = self.attn(q, tokens, tokens, need_weights=False)  # B x 1 x width
        return self.fc(self.drop(self.norm(pooled[:, 0])))


def build_classifier(head: str, channels: Sequence[int], n_classes: int,
                     dropout: float = 0.0) -> nn.Module:
    if head == "linear":
        return PooledLinearHead(channels, n_classes, dropout)
    if head == "attention":
        return AttentionPoolHead(channels, n_classes, dropout)
    raise ValueError(f"unknown classification head {head!r}; choose from {list(HEADS)}")


class SegDecoder(nn.Module):
    def __init__(self, channels: Sequence[int], n_classes: int, width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True))
        self.classify = nn.Conv2d(width, n_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: int) -> torch.Tensor:
        """feats finest first -> B x K x size x size logits."""
        y = self.lateral[-1](feats[-1].float())
        for i in range(len(feats) - 2, -1, -1):
            y = F.interpolate(y, size=feats[i].shape[-2:], mode="nearest") \
                + self.lateral[i](feats[i].float())
        logits = self.classify(self.fuse(y))
        return F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
