"""Batched ultrasound augmentation in torch (one affine warp + intensity changes per sample).

Geometry: scale (log-uniform), rotation, horizontal flip and translation, one warp per sample
applied to the image, its instance mask and its valid-region mask alike (no vertical flip: the
probe is at the top of an ultrasound image). Intensity: gamma, contrast, brightness and
multiplicative speckle noise, as gain and speckle vary between machines and presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    p_affine: float = 0.8
    scale: tuple[float, float] = (0.75, 1.3)
    rotate_deg: float = 12.0
    translate: float = 0.1
    p_flip: float = 0.5
    gamma: float = 0.4          # log-gamma ~ U(-g, g)
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.08    # fraction of the 0-255 range
    p_speckle: float = 0.5
    speckle: float = 0.15       # std of multiplicative noise, drawn U(0, s)


def augment(images: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor,
            cfg: AugmentConfig, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """images B x 3 x S x S float 0-255, masks and valid B x S x S bool -> the same, augmented.

    ``gen`` makes the draw reproducible (one generator per training step).
    """
    b = images.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    # 1. Geometry: output pixel -> input pixel, in normalised [-1, 1] coordinates.
    scale = torch.exp(u(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    angle = u(-cfg.rotate_deg, cfg.rotate_deg) * math.pi / 180
    flip = torch.where(torch.rand(b, generator=gen) < cfg.p_flip, -1.0, 1.0)
    tx, ty = u(-cfg.translate, cfg.translate), u(-cfg.translate, cfg.translate)
    use = torch.rand(b, generator=gen) < cfg.p_affine
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(b, 2, 3)
    theta = torch.where(use[:, None, None], theta, identity)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    both = torch.stack([masks, valid], 1).float()
    both = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False) > 0.5
    masks, valid = both[:, 0], both[:, 1]
    # 2. Intensity on [0, 1]: gamma, contrast around the mean, brightness, speckle.
    x = (images / 255.0).clamp(0, 1)
    x = x ** torch.exp(u(-cfg.gamma, cfg.gamma))[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(*cfg.contrast)[:, None, None, None] + mean
    x = x + u(-cfg.brightness, cfg.brightness)[:, None, None, None]
    sigma = u(0, cfg.speckle) * (torch.rand(b, generator=gen) < cfg.p_speckle)
    noise = torch.randn(x.shape[0], 1, *x.shape[2:], generator=gen)
    x = x * (1 + sigma[:, None, None, None] * noise)
    images = x.clamp(0, 1) * 255.0 * valid[:, None]
    return images, masks, valid
