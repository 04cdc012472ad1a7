"""LoRA (Hu et al., 2021): a frozen linear layer plus a trainable low-rank update.

y = W x + b + (alpha / r) B A x, with A (r x in) small random and B (out x r) zero, so the
wrapped layer starts exactly equal to the original and only ``r (in + out)`` numbers train.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """Wraps ``base`` (kept frozen); x: ... x in -> ... x out."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: float = 8.0) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def inject_lora(module: nn.Module, names: tuple[str, ...], rank: int, alpha: float) -> int:
    """Replace every ``nn.Linear`` child called one of ``names`` under ``module`` by a
    :class:`LoRALinear`; returns how many were wrapped."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if name in names and isinstance(child, nn.Linear):
                setattr(parent, name, LoRALinear(child, rank, alpha))
                count += 1
    return count
