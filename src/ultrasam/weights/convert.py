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
# Key renaming, written once and read in both directions: (SAM prefix, UltraSam prefix, the
# first sub-prefix renamed after it, fragments renamed anywhere after it). Sections are tried in
# order, so mask_decoder.transformer. is matched before mask_decoder.; fragments are applied in
# order (SAM -> UltraSam: old -> new; back: new -> old).
KEY_SECTIONS: tuple[tuple[str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]],
                    ...] = (
    ("image_encoder.", "backbone.", (("blocks.", "layers."), ("neck.", "channel_reduction.")),
     ENCODER_RENAMES),
    ("mask_decoder.transformer.", "decoder.", (),
     (("norm_final_attn.", "post_norm."), *DECODER_RENAMES)),
    ("mask_decoder.", "bbox_head.", (), ()),
    ("prompt_encoder.", "prompt_encoder.", (), ()),
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


def rename_key(key: str, to_ultrasam: bool) -> str | None:
    """``key`` renamed by :data:`KEY_SECTIONS` (SAM -> UltraSam, or back), or None when no
    section's prefix starts it. The attention projections and the label embedding are not
    plain renames and are handled by the converters themselves."""
    for sam_prefix, ultrasam_prefix, heads, fragments in KEY_SECTIONS:
        src, dst = (sam_prefix, ultrasam_prefix) if to_ultrasam else (ultrasam_prefix, sam_prefix)
        if not key.startswith(src):
            continue
        rest = key[len(src):]
        for sam_head, ultrasam_head in heads:
            old, new = (sam_head, ultrasam_head) if to_ultrasam else (ultrasam_head, sam_head)
            if rest.startswith(old):
                rest = new + rest[len(old):]
                break
        for sam_part, ultrasam_part in fragments:
            rest = (rest.replace(sam_part, ultrasam_part) if to_ultrasam
                    else rest.replace(ultrasam_part, sam_part))
        return dst + rest
    return None


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
        renamed = rename_key(key, to_ultrasam=True)
        if renamed is None:
            raise ConversionError(f"unexpected key in SAM state dict: {key}")
        out[renamed] = src[key]
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
        elif key.startswith("decoder.") and any(f"{m}.attn." in key for m in ATTENTION_MODULES):
            # Attention modules: biases split back into q, k, v; weights renamed.
            rest = key[len("decoder."):]
            module = next(m for m in ATTENTION_MODULES if f"{m}.attn." in rest)
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
        elif (renamed := rename_key(key, to_ultrasam=False)) is not None:
            out[renamed] = value
        else:
            unexpected.append(key)
    if unexpected or problems:
        lines = [f"unexpected key: {k}" for k in sorted(unexpected)] + problems
        raise ConversionError("cannot convert UltraSam state dict:\n  " + "\n  ".join(lines))
    return out
