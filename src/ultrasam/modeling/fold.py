"""Fold inference-mode BatchNorm into the convolution before it (y = a * conv(x) + b).

A BatchNorm in eval mode is a per-channel affine map, so it can be merged into the preceding
convolution's weights and bias: one op less per layer and no extra pass over the activations.
Used by the server's bf16 path (``inference.precision.prepare_model``), where the model is only
ever run for inference; a folded model cannot be trained or re-loaded from a checkpoint (its
BatchNorm layers are gone), so this never runs on a model a caller may still train.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """In place: ``conv`` becomes ``bn(conv(x))`` for ``bn``'s running statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
        new_weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        # Keep the weight's memory format (channels_last for the bf16 path).
        conv.weight.copy_(new_weight)
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def _fold_if_pair(conv: nn.Module, bn: nn.Module) -> bool:
    """Fold ``bn`` into ``conv`` when they are a Conv2d and a BatchNorm2d; whether it did."""
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        fold_conv_bn(conv, bn)
        return True
    return False


def fold_batchnorm(model: nn.Module) -> int:
    """In place: fold every BatchNorm2d that directly follows a Conv2d, either inside an
    ``nn.Sequential`` or as a ``(conv, bn)`` attribute pair a module lists in its
    ``FOLD_PAIRS``; the folded BatchNorm becomes ``nn.Identity``. The model must be in eval
    mode (training-mode BatchNorm uses batch statistics, which no fold can reproduce).
    Returns the number of folded layers."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    folded = 0
    for module in list(model.modules()):  # a list: folding replaces modules
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if _fold_if_pair(module[i], module[i + 1]):
                    module[i + 1] = nn.Identity()
                    folded += 1
        for conv_name, bn_name in getattr(module, "FOLD_PAIRS", ()):
            if _fold_if_pair(getattr(module, conv_name), getattr(module, bn_name)):
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded
