"""Batched ultrasound augmentation in torch (one affine warp + intensity changes per sample).

Geometry: scale (log-uniform), rotation, horizontal flip and translation, one warp per sample
applied to the image, its instance mask and its valid-region mask alike (no vertical flip: the
probe is at the top of an ultrasound image). Optionally (``p_focus``) a sample is instead a
focus crop: a square window around its instance, ``focus_expand`` x the instance's longer box
side, scaled to the frame, so small structures are also seen magnified (the view of
FocalClick's focus crops; the predictor itself has no zoom-in pass). Intensity: gamma,
contrast, brightness and multiplicative speckle noise, as gain and speckle vary between
machines and presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .prompts import boxes_from_masks


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
    p_focus: float = 0.0        # probability of a focus crop instead of the global scale
    focus_expand: tuple[float, float] = (1.4, 3.0)  # window side / instance's longer box side
    focus_max_zoom: float = 4.0


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
    if cfg.p_focus > 0:  # drawn only then: configurations without focus keep their stream
        scale, tx, ty, use = _focus(masks, scale, tx, ty, use, cfg, gen)
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


def _focus(masks: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
           use: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace the zoom and shift of a ``p_focus`` share of samples by a crop around the
    instance (masks B x S x S bool). Returns (scale, tx, ty, use) B each: output pixel ->
    input pixel is rotation / scale + (tx, ty), in normalised coordinates."""
    b, s = masks.shape[0], masks.shape[-1]
    pick = torch.rand(b, generator=gen) < cfg.p_focus
    lo, hi = cfg.focus_expand
    expand = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(b, generator=gen))
    jitter = (torch.rand(b, 2, generator=gen) - 0.5) * 0.3  # of the window's half side
    box, present = boxes_from_masks(masks)
    x0, y0, x1, y1 = box.unbind(1)
    side = torch.maximum(x1 - x0, y1 - y0).clamp(min=1.0) * expand
    zoom = (s / side).clamp(max=cfg.focus_max_zoom)
    # Only a magnifying crop of a present instance is a focus crop; the rest keep their draw.
    pick = pick & present & (zoom > 1.0)
    half = 1.0 / zoom  # the window's half side in normalised units
    fx = (x0 + x1) / s - 1 + jitter[:, 0] * half
    fy = (y0 + y1) / s - 1 + jitter[:, 1] * half
    return (torch.where(pick, zoom, scale), torch.where(pick, fx, tx),
            torch.where(pick, fy, ty), use | pick)
