"""Checks on weights from outside: bounded configs, contiguous layer indices, finite values.

A config read from a file (``config.json``, or inferred from tensor shapes) decides how big a
model gets built, so it is checked against fixed bounds before any module exists: far above
every released model (ViT-H: 32 blocks of width 1280 at 1024 px) and far below what would
exhaust a machine. Layer indices inferred from key names must run 0..N-1 without gaps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

import torch

from ..config import ModelConfig
from ..errors import CheckpointError

# field -> (lowest, highest) allowed value for a config that comes from a file.
INT_BOUNDS: dict[str, tuple[int, int]] = {
    "img_size": (16, 4096),
    "patch_size": (1, 64),
    "encoder_embed_dim": (1, 4096),
    "encoder_depth": (1, 128),
    "encoder_num_heads": (1, 128),
    "window_size": (0, 256),
    "conv_kernel_size": (1, 31),
    "prompt_embed_dim": (1, 4096),
    "mask_in_chans": (1, 1024),
    "decoder_depth": (1, 32),
    "decoder_mlp_dim": (1, 32768),
    "decoder_num_heads": (1, 128),
    "attention_downsample_rate": (1, 64),
    "num_multimask_outputs": (1, 16),
    "iou_head_depth": (1, 16),
    "iou_head_hidden_dim": (1, 8192),
    "fusion_context_depth": (0, 32),
}
MAX_GRID = 256  # embedding side (SAM: 64)
MAX_MLP_RATIO = 16.0
MAX_CONV_STAGES = 8
MAX_CONV_DIM = 4096
MAX_CONV_DEPTH = 64
MAX_PARAMETERS = 4_000_000_000  # ViT-H has 641 M


def check_config_bounds(config: ModelConfig, source: str) -> None:
    """Raise :class:`CheckpointError` naming the first field of ``config`` out of bounds."""
    def bad(what: str) -> CheckpointError:
        return _bad(source, what)

    for name, (lo, hi) in INT_BOUNDS.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(f"{name}={value!r} (allowed {lo}..{hi})")
    if config.img_size % config.patch_size or config.embed_size > MAX_GRID:
        raise bad(f"img_size {config.img_size} / patch_size {config.patch_size} must give a "
                  f"whole grid of at most {MAX_GRID}")
    ratio = config.mlp_ratio
    if not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or \
            not 0 < ratio <= MAX_MLP_RATIO:
        raise bad(f"mlp_ratio={ratio!r} (allowed (0, {MAX_MLP_RATIO}])")
    for name in ("pixel_mean", "pixel_std"):
        values = getattr(config, name)
        if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                       for v in values):
            raise bad(f"{name}={values!r} (three finite numbers)")
    if min(config.pixel_std) <= 0:
        raise bad(f"pixel_std={config.pixel_std!r} must be positive")
    if config.encoder == "vit":
        _check_vit(config, source)
    else:
        _check_conv(config, source)
    if config.prompt_embed_dim % config.decoder_num_heads or \
            config.prompt_embed_dim % config.attention_downsample_rate:
        raise bad("prompt_embed_dim must divide by decoder_num_heads and "
                  "attention_downsample_rate")


def _bad(source: str, what: str) -> CheckpointError:
    return CheckpointError(f"{source}: config out of bounds: {what}")


def _check_vit(config: ModelConfig, source: str) -> None:
    def bad(what: str) -> CheckpointError:
        return _bad(source, what)

    if config.encoder_embed_dim % config.encoder_num_heads:
        raise bad("encoder_embed_dim must divide by encoder_num_heads")
    idx = config.encoder_global_attn_indexes
    depth = config.encoder_depth
    if len(set(idx)) != len(idx) or any(not isinstance(i, int) or not 0 <= i < depth
                                        for i in idx):
        raise bad(f"encoder_global_attn_indexes={idx!r} must be distinct blocks "
                  f"0..{config.encoder_depth - 1}")
    if len(idx) < config.encoder_depth and not 1 <= config.window_size <= config.embed_size:
        raise bad(f"window_size={config.window_size} must be 1..{config.embed_size}")


def _check_conv(config: ModelConfig, source: str) -> None:
    def bad(what: str) -> CheckpointError:
        return _bad(source, what)

    dims, depths = config.conv_dims, config.conv_depths
    if not 1 <= len(dims) <= MAX_CONV_STAGES or len(depths) != len(dims):
        raise bad(f"conv_dims {dims} / conv_depths {depths}: 1..{MAX_CONV_STAGES} stages of "
                  "equal count")
    if any(not isinstance(d, int) or not 1 <= d <= MAX_CONV_DIM for d in dims):
        raise bad(f"conv_dims={dims} (each 1..{MAX_CONV_DIM})")
    if any(not isinstance(d, int) or not 1 <= d <= MAX_CONV_DEPTH for d in depths):
        raise bad(f"conv_depths={depths} (each 1..{MAX_CONV_DEPTH})")
    if config.encoder == "fusion" and (dims[0] < 2 or dims[0] % 2 or config.img_size % 4):
        raise bad(f"fusion needs an even conv_dims[0] >= 2 and img_size divisible by 4; got "
                  f"{dims[0]}, {config.img_size}")
    if config.encoder == "fusion" and config.fusion_context_depth and \
            dims[-1] % config.decoder_num_heads:
        raise bad(f"fusion_context_depth {config.fusion_context_depth} needs conv_dims[-1] "
                  f"({dims[-1]}) divisible by decoder_num_heads ({config.decoder_num_heads})")


def check_parameter_count(n: int, source: str) -> None:
    if n > MAX_PARAMETERS:
        raise CheckpointError(f"{source}: the config describes {n:,} parameters (limit "
                              f"{MAX_PARAMETERS:,})")


def contiguous_indices(keys: Iterable[str], pattern: str, source: str) -> int:
    """Number of layers N whose keys match ``pattern`` (one ``(\\d+)`` group): indices must be
    exactly 0..N-1 (a lone key with index 200000 would otherwise build 200001 layers)."""
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found:
        raise CheckpointError(f"{source}: no keys match {pattern!r}")
    n = len(found)
    if found != set(range(n)):
        missing = sorted(set(range(max(found) + 1)) - found)
        raise CheckpointError(f"{source}: layer indices of {pattern!r} are not contiguous "
                              f"0..{n - 1} (highest {max(found)}, first missing {missing[0]})")
    return n


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity, naming the first such tensor."""
    for name, t in state.items():
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: tensor {name!r} holds {bad} non-finite values "
                                  "(NaN or infinity): corrupted or diverged weights")
