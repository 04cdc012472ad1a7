"""Build a model from its config: the only place that turns numbers into modules."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig, get_config
from .base import PromptableModel
from .conv_encoder import ConvEncoder
from .fusion import FusionNet
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .transformer import TwoWayTransformer


def build_model(config: ModelConfig | str) -> PromptableModel:
    """A randomly initialised model for a config (or a variant name: vit_b, vit_l, vit_h, tiny,
    small, fusion)."""
    if isinstance(config, str):
        config = get_config(config)
    if config.encoder == "fusion":
        return FusionNet(config)
    grid = config.embed_size
    image_encoder: nn.Module
    if config.encoder == "vit":
        image_encoder = ImageEncoderViT(
            img_size=config.img_size, patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim, depth=config.encoder_depth,
            num_heads=config.encoder_num_heads, mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim, window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes)
    elif config.encoder == "conv":
        image_encoder = ConvEncoder(
            img_size=config.img_size, patch_size=config.patch_size, dims=config.conv_dims,
            depths=config.conv_depths, out_chans=config.prompt_embed_dim,
            kernel_size=config.conv_kernel_size, mlp_ratio=config.mlp_ratio)
    else:
        raise ValueError(f"unknown encoder type {config.encoder!r}")
    prompt_encoder = PromptEncoder(
        embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
        input_image_size=(config.img_size, config.img_size), mask_in_chans=config.mask_in_chans)
    mask_decoder = MaskDecoder(
        transformer_dim=config.prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth, embedding_dim=config.prompt_embed_dim,
            num_heads=config.decoder_num_heads, mlp_dim=config.decoder_mlp_dim,
            attention_downsample_rate=config.attention_downsample_rate),
        num_multimask_outputs=config.num_multimask_outputs,
        iou_head_depth=config.iou_head_depth, iou_head_hidden_dim=config.iou_head_hidden_dim)
    return Sam(config, image_encoder, prompt_encoder, mask_decoder)
