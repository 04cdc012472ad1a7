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
EncoderType = Literal["vit", "conv", "fusion"]
ENCODERS: tuple[str, ...] = ("vit", "conv", "fusion")
# Fields that hold tuples; YAML and JSON give lists, which are normalised on construction.
_TUPLE_FIELDS = ("encoder_global_attn_indexes", "conv_dims", "conv_depths", "pixel_mean",
                 "pixel_std")

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build a SAM-family model.

    Image encoder, ``encoder="vit"``: SAM's ViT with windowed and global attention and
    decomposed relative-position bias. ``img_size`` is the square input side after resize and
    padding; the embedding is ``img_size // patch_size`` on each side.

    ``encoder="conv"``: a ConvNeXt-style hierarchical encoder
    (:class:`ultrasam.modeling.conv_encoder.ConvEncoder`): a ``patch_size`` x ``patch_size``
    stride-``patch_size`` stem, then ``len(conv_dims)`` stages of ``conv_depths[i]`` blocks of
    width ``conv_dims[i]`` (each stage after the first halves the resolution), merged top-down
    (FPN-like) into the ``prompt_embed_dim``-channel embedding at the stem's resolution, so the
    embedding is again ``img_size // patch_size`` on each side. Its blocks use ``mlp_ratio``
    and depthwise ``conv_kernel_size`` kernels; the ViT-only fields are ignored.

    Prompt encoder and mask decoder: SAM's, with ``prompt_embed_dim`` channels.
    """

    variant: str = "vit_b"
    encoder: EncoderType = "vit"
    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    mlp_ratio: float = 4.0
    conv_dims: tuple[int, ...] = ()
    conv_depths: tuple[int, ...] = ()
    conv_kernel_size: int = 7
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
    # FusionNet only: global self-attention blocks after its deepest stage (0 = none).
    fusion_context_depth: int = 0
    # How images are turned into model input: SAM's (resize longest side, ImageNet
    # normalisation, pad) or MedSAM's (plain resize to a square, min-max to [0, 1]).
    preprocessing: Preprocessing = "sam"
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder type {self.encoder!r}; expected one of "
                             f"{list(ENCODERS)}")
        if self.encoder in ("conv", "fusion"):
            self._check_conv()

    def _check_conv(self) -> None:
        dims, depths = self.conv_dims, self.conv_depths
        if not dims or len(dims) != len(depths):
            raise ValueError(f"a conv encoder needs conv_dims and conv_depths of equal, non-zero "
                             f"length; got conv_dims={dims}, conv_depths={depths}")
        if any(int(d) < 1 for d in (*dims, *depths)):
            raise ValueError(f"conv_dims and conv_depths must be >= 1; got {dims}, {depths}")
        if self.conv_kernel_size < 1 or self.conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd and >= 1, got "
                             f"{self.conv_kernel_size}")
        # The deepest stage runs at img_size / (patch_size * 2**(stages-1)): keep it whole.
        stride = self.patch_size * 2 ** (len(dims) - 1)
        if self.img_size % stride:
            raise ValueError(f"img_size {self.img_size} must be a multiple of patch_size x "
                             f"2**(stages - 1) = {stride} for a conv encoder")

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
        for key in _TUPLE_FIELDS:
            d[key] = list(getattr(self, key))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        d = dict(d)
        for key in _TUPLE_FIELDS:
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

# The default CPU model: a ConvNeXt-style encoder (4 stages, 64 x 64 embedding from a 256 px
# input) with SAM's prompt encoder and a half-width (128-channel) mask decoder; ~6 M
# parameters, ~12 MiB as fp16 safetensors.
SMALL = ModelConfig(variant="small", encoder="conv", img_size=256, patch_size=4,
                    conv_dims=(48, 96, 192, 384), conv_depths=(2, 2, 6, 2), conv_kernel_size=7,
                    mlp_ratio=4.0, prompt_embed_dim=128, decoder_mlp_dim=1024,
                    decoder_num_heads=4, iou_head_hidden_dim=128)

# The default model: early fusion (see modeling/fusion.py), designed to train and run on a
# 2-core CPU; 256 px input, prompts fused after a stride-4 stem, logits at 256 x 256.
FUSION = ModelConfig(variant="fusion", encoder="fusion", img_size=256, patch_size=4,
                     conv_dims=(32, 80, 160, 256), conv_depths=(1, 2, 3, 2),
                     prompt_embed_dim=64, iou_head_hidden_dim=128)

VARIANTS: dict[str, ModelConfig] = {c.variant: c
                                    for c in (VIT_B, VIT_L, VIT_H, TINY, SMALL, FUSION)}


def get_config(variant: str, **overrides: Any) -> ModelConfig:
    """The config of a named variant, with optional field overrides (a small custom model)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
    return VARIANTS[variant].replace(**overrides) if overrides else VARIANTS[variant]
