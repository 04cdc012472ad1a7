"""LoRA (Hu et al., 2021) on SAM's image encoder: a frozen Linear plus a low-rank update.

``add_lora`` wraps every attention ``qkv`` of the encoder; ``merge_lora`` folds the updates back
into plain Linears, so the exported weights carry SAM's names.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sam import Sam


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T``: a frozen Linear plus a low-rank update.

    A (rank x in) starts small and random, B (out x rank) at zero, so the wrapped layer starts
    as the plain one; the base layer's parameters are frozen. x: ... x in -> ... x out.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.base.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        """The plain Linear with the update folded into its weight."""
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(model: Sam, rank: int, alpha: float) -> int:
    """Wrap every image-encoder ``attn.qkv`` in :class:`LoRALinear`; returns how many."""
    n = 0
    for module in model.image_encoder.modules():
        qkv = getattr(module, "qkv", None)
        if isinstance(qkv, nn.Linear):
            module.qkv = LoRALinear(qkv, rank, alpha)
            n += 1
    if n == 0:
        raise ValueError("the image encoder has no attention qkv layers to adapt")
    return n


def merge_lora(model: Sam) -> None:
    """Fold every LoRA update into its Linear, restoring SAM's parameter names."""
    for module in model.image_encoder.modules():
        if isinstance(getattr(module, "qkv", None), LoRALinear):
            module.qkv = module.qkv.merged()

