"""Training augmentation: geometric (flip, scale/crop) and ultrasound-specific photometric.

All functions take an image H x W x 3 uint8 (already resized to fit the model input), the
instance masks P x H x W bool where geometry changes, and a ``numpy.random.Generator``; they
return new arrays and never modify their inputs. The photometric ones imitate what varies
between ultrasound machines and operators:

- **speckle**: multiplicative, unit-mean Gamma noise on a half-resolution grid (speckle grains
  span a few pixels), the texture coherent imaging produces;
- **gain**: overall brightness (the operator's gain knob);
- **depth attenuation**: brightness falling exponentially with depth (rows), as when
  time-gain compensation is set too low;
- **shadowing**: a dark vertical band under a random depth, like the acoustic shadow behind
  bone, calcification or gas.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges; also the ``augment`` section of ``TrainConfig``."""

    hflip: float = 0.5
    p_scale: float = 0.0
    scale_range: tuple[float, float] = (0.75, 1.25)
    p_speckle: float = 0.0
    speckle_strength: float = 0.3
    p_gain: float = 0.0
    gain_range: tuple[float, float] = (0.7, 1.3)
    p_attenuation: float = 0.0
    attenuation_max: float = 1.5
    p_shadow: float = 0.0
    shadow_strength: float = 0.6


def hflip(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: H x W x 3 image, P x H x W masks."""
    return image[:, ::-1].copy(), masks[:, :, ::-1].copy()


def scale_crop(image: np.ndarray, masks: np.ndarray, scale: float, max_side: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``scale``, then crop a random window so both sides stay <= ``max_side``.

    Zooming in crops part of the field of view (instances may be cut or lost; the caller drops
    those that became too small); zooming out leaves more padding.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    if image.ndim == 2:
        image = image[:, :, None]
    masks = np.stack([cv2.resize(m.astype(np.uint8), (nw, nh),
                                 interpolation=cv2.INTER_NEAREST) for m in masks]).astype(bool) \
        if len(masks) else np.zeros((0, nh, nw), bool)
    top = int(rng.integers(0, nh - max_side + 1)) if nh > max_side else 0
    left = int(rng.integers(0, nw - max_side + 1)) if nw > max_side else 0
    sl = (slice(top, top + max_side), slice(left, left + max_side))
    return np.ascontiguousarray(image[sl]), np.ascontiguousarray(masks[:, sl[0], sl[1]])


def speckle(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply by unit-mean Gamma noise with coefficient of variation ``strength``."""
    if strength <= 0:
        return image
    h, w = image.shape[:2]
    k = 1.0 / strength ** 2
    noise = rng.gamma(k, 1.0 / k, size=(max(1, h // 2), max(1, w // 2))).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    return _to_uint8(image.astype(np.float32) * noise[:, :, None])


def gain(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale every intensity by ``factor`` (clipped to 0-255)."""
    return _to_uint8(image.astype(np.float32) * factor)


def depth_attenuation(image: np.ndarray, alpha: float) -> np.ndarray:
    """Multiply row y by exp(-alpha * y / H): brightness falls with depth."""
    h = image.shape[0]
    profile = np.exp(-alpha * np.arange(h, dtype=np.float32) / max(h, 1))
    return _to_uint8(image.astype(np.float32) * profile[:, None, None])


def shadow(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Darken a vertical band (random centre, width 5-25 % of W, soft edges) below a random
    depth by up to ``strength``."""
    h, w = image.shape[:2]
    centre = rng.uniform(0, w)
    half = rng.uniform(0.025, 0.125) * w
    top = rng.uniform(0, 0.7) * h
    depth = rng.uniform(0.3, 1.0) * strength
    xs = np.arange(w, dtype=np.float32)
    across = np.clip(1.0 - np.abs(xs - centre) / max(half, 1.0), 0.0, 1.0) ** 0.5
    ys = np.arange(h, dtype=np.float32)
    down = np.clip((ys - top) / max(0.05 * h, 1.0), 0.0, 1.0)
    factor = 1.0 - depth * down[:, None] * across[None, :]
    return _to_uint8(image.astype(np.float32) * factor[:, :, None])


def augment(image: np.ndarray, masks: np.ndarray, params: AugmentParams, max_side: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply the configured augmentations in a fixed order (geometry, then intensities).

    image H x W x 3 uint8, masks P x H x W bool; returns arrays of the same layout, sides
    <= ``max_side``. The caller seeds ``rng`` per image, which makes the result reproducible
    whatever the batch or process the image lands in.
    """
    draws = rng.random(6)
    scale = rng.uniform(*params.scale_range)
    g = rng.uniform(*params.gain_range)
    alpha = rng.uniform(0.0, params.attenuation_max)
    if draws[0] < params.hflip:
        image, masks = hflip(image, masks)
    if draws[1] < params.p_scale:
        image, masks = scale_crop(image, masks, scale, max_side, rng)
    if draws[2] < params.p_speckle:
        image = speckle(image, params.speckle_strength, rng)
    if draws[3] < params.p_gain:
        image = gain(image, g)
    if draws[4] < params.p_attenuation:
        image = depth_attenuation(image, alpha)
    if draws[5] < params.p_shadow:
        image = shadow(image, params.shadow_strength, rng)
    return image, masks


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
