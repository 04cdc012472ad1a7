"""Model hyper-parameters: one frozen dataclass, one value per variant.

The config is saved inside every native checkpoint (``config.json``) so a file always carries
what is needed to rebuild its network. Properties that change numerics without changing the
parameter set (UltraSam's doubled decoder residual, MedSAM's preprocessing) live here too, so
they travel with the weights instead of being remembered by the user.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Preprocessing = Literal["sam", "medsam"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a SAM-family model.

    Image encoder (``encoder="vit"``): SAM's ViT with windowed and global attention and
    decomposed relative-position bias. ``img_size`` is the square input side after resize and
    padding; the embedding is ``img_size // patch_size`` on each side.
    Prompt encoder and mask decoder: SAM's, with ``prompt_embed_dim`` channels.
    """

    variant: str = "vit_b"
    encoder: Literal["vit"] = "vit"
    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    # UltraSam's decoder MLP adds its input twice (mmcv FFN residual + block residual).
    doubled_mlp_residual: bool = False
    # How images are turned into model input: SAM's (resize longest side, ImageNet
    # normalisation, pad) or MedSAM's (plain resize to a square, min-max to [0, 1]).
    preprocessing: Preprocessing = "sam"
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def embed_size(self) -> int:
        """Side of the image embedding grid (64 for SAM at 1024 px)."""
        return self.img_size // self.patch_size

    @property
    def mask_size(self) -> int:
        """Side of the low-resolution mask logits (4x the embedding: 256 for SAM)."""
        return 4 * self.embed_size

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        d = dict(d)
        for key in ("encoder_global_attn_indexes", "pixel_mean", "pixel_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


VIT_B = ModelConfig(variant="vit_b")
VIT_L = ModelConfig(variant="vit_l", encoder_embed_dim=1024, encoder_depth=24,
                    encoder_num_heads=16, encoder_global_attn_indexes=(5, 11, 17, 23))
VIT_H = ModelConfig(variant="vit_h", encoder_embed_dim=1280, encoder_depth=32,
                    encoder_num_heads=16, encoder_global_attn_indexes=(7, 15, 23, 31))
# A tiny ViT for tests and parity fixtures: 128 px input, 8x8 embedding, 32 channels.
TINY = ModelConfig(variant="tiny", img_size=128, encoder_embed_dim=48, encoder_depth=2,
                   encoder_num_heads=2, encoder_global_attn_indexes=(1,), window_size=3,
                   prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=2,
                   iou_head_hidden_dim=32)

VARIANTS: dict[str, ModelConfig] = {c.variant: c for c in (VIT_B, VIT_L, VIT_H, TINY)}


def get_config(variant: str, **overrides: Any) -> ModelConfig:
    """The config of a named variant, with optional field overrides (a small custom model)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[variant].replace(**overrides) if overrides else VARIANTS[variant]
