"""Pure state-dict converters between SAM (Meta) naming and UltraSam (mmdet) naming.

Driven by literal tables (the mapping documented for UltraSam.pth). Every source key must be
consumed and every tensor shape checked; anything left over raises an error listing it —
never "print and save anyway".
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import CheckpointError

# Image encoder: SAM name fragment -> UltraSam name fragment (applied after the prefix).
ENCODER_RENAMES: tuple[tuple[str, str], ...] = (
    ("patch_embed.proj.", "patch_embed.projection."),
    ("mlp.lin1.", "ffn.layers.0.0."),
    ("mlp.lin2.", "ffn.layers.1."),
    ("norm1.", "ln1."),
    ("norm2.", "ln2."),
)
# Two-way transformer renames (outside the attention modules).
DECODER_RENAMES: tuple[tuple[str, str], ...] = (
    ("mlp.lin1.", "mlp.layers.0.0."),
    ("mlp.lin2.", "mlp.layers.1."),
)
ATTENTION_MODULES = ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token",
                     "final_attn_token_to_image")
# Rows of UltraSam's label embedding (11 x C for SAM's 4 mask tokens), in order.
LABEL_EMBEDDING_KEY = "prompt_encoder.label_encoder.label_embedding.weight"
LABEL_ROWS: tuple[str, ...] = (
    "prompt_encoder.no_mask_embed.weight",
    "prompt_encoder.point_embeddings.0.weight",
    "prompt_encoder.point_embeddings.1.weight",
    "prompt_encoder.point_embeddings.2.weight",
    "prompt_encoder.point_embeddings.3.weight",
    "prompt_encoder.not_a_point_embed.weight",
    "mask_decoder.mask_tokens.weight",  # as many rows as mask tokens
    "mask_decoder.iou_token.weight",
)


class ConversionError(CheckpointError):
    """A state dict that cannot be converted exactly; the message lists every offender."""


def _encoder_key_to_ultrasam(rest: str) -> str:
    if rest.startswith("blocks."):
        rest = "layers." + rest[len("blocks."):]
    elif rest.startswith("neck."):
        rest = "channel_reduction." + rest[len("neck."):]
    for old, new in ENCODER_RENAMES:
        rest = rest.replace(old, new)
    return "backbone." + rest


def _encoder_key_to_sam(rest: str) -> str:
    if rest.startswith("layers."):
        rest = "blocks." + rest[len("layers."):]
    elif rest.startswith("channel_reduction."):
        rest = "neck." + rest[len("channel_reduction."):]
    for old, new in ENCODER_RENAMES:
        rest = rest.replace(new, old)
    return "image_encoder." + rest


def sam_to_ultrasam(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SAM-named state dict -> UltraSam (mmdet) naming, as stored in UltraSam.pth."""
    src = dict(state)
    out: dict[str, torch.Tensor] = {}
    # Prompt tokens and output tokens are stacked into one label embedding.
    missing = [k for k in LABEL_ROWS if k not in src]
    if missing:
        raise ConversionError(f"SAM state dict lacks label-embedding tensors: {missing}")
    out[LABEL_EMBEDDING_KEY] = torch.cat([src.pop(k) for k in LABEL_ROWS], dim=0)
    # Attention modules: q/k/v weights renamed, biases concatenated q, k, v.
    prefix_t = "mask_decoder.transformer."
    attn_prefixes = sorted({k[: k.index(m) + len(m)] for k in src for m in ATTENTION_MODULES
                            if k.startswith(prefix_t) and f"{m}." in k})
    for ap in attn_prefixes:
        dst = "decoder." + ap[len(prefix_t):] + ".attn."
        biases = []
        for part in ("q", "k", "v"):
            out[dst + f"{part}_proj_weight"] = src.pop(f"{ap}.{part}_proj.weight")
            biases.append(src.pop(f"{ap}.{part}_proj.bias"))
        out[dst + "in_proj_bias"] = torch.cat(biases)
        out[dst + "out_proj.weight"] = src.pop(f"{ap}.out_proj.weight")
        out[dst + "out_proj.bias"] = src.pop(f"{ap}.out_proj.bias")
    for key in sorted(src):
        value = src[key]
        if key.startswith("image_encoder."):
            out[_encoder_key_to_ultrasam(key[len("image_encoder."):])] = value
        elif key.startswith(prefix_t):
            rest = key[len(prefix_t):]
            rest = rest.replace("norm_final_attn.", "post_norm.")
            for old, new in DECODER_RENAMES:
                rest = rest.replace(old, new)
            out["decoder." + rest] = value
        elif key.startswith("mask_decoder."):
            out["bbox_head." + key[len("mask_decoder."):]] = value
        elif key.startswith("prompt_encoder."):
            out[key] = value
        else:
            raise ConversionError(f"unexpected key in SAM state dict: {key}")
    return out


def ultrasam_to_sam(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """UltraSam (mmdet) naming -> SAM naming. Raises listing every key it cannot place."""
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    problems: list[str] = []
    for key, value in state.items():
        if key == LABEL_EMBEDDING_KEY:
            n_mask_tokens = value.shape[0] - (len(LABEL_ROWS) - 1)
            if value.ndim != 2 or n_mask_tokens < 1:
                problems.append(f"{key}: shape {tuple(value.shape)} cannot hold the 7 prompt "
                                "rows plus mask tokens")
                continue
            row = 0
            for name in LABEL_ROWS:
                n = n_mask_tokens if name == "mask_decoder.mask_tokens.weight" else 1
                out[name] = value[row:row + n].clone()
                row += n
        elif key.startswith("backbone."):
            out[_encoder_key_to_sam(key[len("backbone."):])] = value
        elif key.startswith("decoder."):
            rest = key[len("decoder."):]
            module = next((m for m in ATTENTION_MODULES if f"{m}.attn." in rest), None)
            if module is not None:
                head, tail = rest.split(f"{module}.attn.", 1)
                base = f"mask_decoder.transformer.{head}{module}."
                if tail == "in_proj_bias":
                    if value.shape[0] % 3:
                        problems.append(f"{key}: length {value.shape[0]} not divisible by 3")
                        continue
                    for part, chunk in zip("qkv", value.chunk(3)):
                        out[f"{base}{part}_proj.bias"] = chunk.clone()
                elif tail in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    out[f"{base}{tail[0]}_proj.weight"] = value
                elif tail.startswith("out_proj."):
                    out[base + tail] = value
                else:
                    unexpected.append(key)
                continue
            rest = rest.replace("post_norm.", "norm_final_attn.")
            for old, new in DECODER_RENAMES:
                rest = rest.replace(new, old)
            out["mask_decoder.transformer." + rest] = value
        elif key.startswith("bbox_head."):
            out["mask_decoder." + key[len("bbox_head."):]] = value
        elif key.startswith("prompt_encoder."):
            out[key] = value
        else:
            unexpected.append(key)
    if unexpected or problems:
        lines = [f"unexpected key: {k}" for k in sorted(unexpected)] + problems
        raise ConversionError("cannot convert UltraSam state dict:\n  " + "\n  ".join(lines))
    return out
