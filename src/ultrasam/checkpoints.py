"""Loading and saving weights: safe, strict, with the format detected from the file's contents.

Formats:
- ``sam``: Meta SAM ``.pth`` (flat state dict) or a SAM-named dict wrapped under ``model``;
- ``medsam``: exactly SAM's keys, but MedSAM's preprocessing (recorded in the model's config);
- ``ultrasam``: UltraSam's mmengine container (``state_dict`` in mmdet naming), loaded with
  UltraSam's doubled decoder-MLP residual switched on;
- ``native``: our folder — ``model.safetensors`` + ``config.json`` + ``README.md``.

Every load is strict (missing, unexpected or mis-shaped keys raise :class:`CheckpointError`
listing them) and safe (safetensors, or pickle through :mod:`ultrasam.safe_pickle`).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import VARIANTS, ModelConfig
from .convert import ConversionError, ultrasam_to_sam
from .modeling import Sam, build_model
from .safe_pickle import UnsafeCheckpointError, restricted_pickle_module

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("sam", "medsam", "ultrasam", "native")
NATIVE_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).parent / "weights" / "default"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded exactly; the message says what is wrong."""


class DefaultModelUnavailable(RuntimeError):
    """No trained default model is bundled with this installation."""


@dataclass
class CheckpointInfo:
    """What a file holds, without building a model."""

    path: str
    format: str
    config: ModelConfig
    n_parameters: int
    source_format: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "variant": self.config.variant,
                "parameters": self.n_parameters, "preprocessing": self.config.preprocessing,
                "doubled_mlp_residual": self.config.doubled_mlp_residual,
                "img_size": self.config.img_size, "source_format": self.source_format}


# ------------------------------------------------------------------------------ reading
def _torch_load_safe(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=restricted_pickle_module)
    except UnsafeCheckpointError as e:
        raise CheckpointError(f"{path}: unsafe checkpoint: {e}") from e
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    except Exception as e:  # pickle.UnpicklingError and friends from corrupt bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e


def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensor dict inside a container, and where it was found."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: top level is {type(obj).__name__}, not a dict")
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
            if any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj, where = inner, wrapper
                break
    else:
        where = "top level"
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(k for k in obj if k not in tensors)
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found ({where})")
    if others and where == "top level":
        raise CheckpointError(f"{path}: non-tensor entries beside the weights: {others[:10]}")
    # Strip a DDP "module." prefix defensively.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors, where


def detect_naming(state: dict[str, torch.Tensor]) -> str:
    """'sam' or 'ultrasam' from the key names; raises when neither fits."""
    keys = list(state)
    if any(k.startswith(("image_encoder.", "mask_decoder.")) for k in keys) or \
            "prompt_encoder.point_embeddings.0.weight" in state:
        return "sam"
    if any(k.startswith(("backbone.", "decoder.", "bbox_head.")) for k in keys):
        return "ultrasam"
    raise CheckpointError("unrecognised key naming (neither SAM nor UltraSam): "
                          f"first keys {keys[:5]}")


def infer_config(state: dict[str, torch.Tensor]) -> ModelConfig:
    """Rebuild a ViT config from SAM-named weights (shapes carry every size but one).

    The decoder's head count is not recoverable from weights; known variants match exactly,
    otherwise SAM's 8 heads are assumed (with a notice).
    """
    if "image_encoder.pos_embed" not in state and any(
            k.startswith("image_encoder.stem.") for k in state):
        # A conv encoder's sizes cannot be read back reliably from shapes alone (and the
        # variant's behaviour switches could not be either): such models travel only in the
        # native format, whose config.json records the architecture.
        raise CheckpointError("these weights hold a convolutional image encoder (keys "
                              "'image_encoder.stem.*'); load them from a native checkpoint "
                              "folder (model.safetensors + config.json), not a SAM-format file")
    try:
        pos = state["image_encoder.pos_embed"]
        patch = state["image_encoder.patch_embed.proj.weight"]
        _, grid, _, dim = pos.shape
        p = patch.shape[-1]
        depth = 1 + max(int(m.group(1)) for k in state
                        if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k)))
        head_dim = state["image_encoder.blocks.0.attn.rel_pos_h"].shape[1]
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0] for i in range(depth)]
        global_idx = tuple(i for i, r in enumerate(rel) if r == 2 * grid - 1)
        windowed = [r for r in rel if r != 2 * grid - 1]
        window = (windowed[0] + 1) // 2 if windowed else 14
        prompt_dim = state["image_encoder.neck.0.weight"].shape[0]
        mlp_ratio = state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / dim
        dec_depth = 1 + max(int(m.group(1)) for k in state
                            if (m := re.match(r"mask_decoder\.transformer\.layers\.(\d+)\.", k)))
        dec_mlp = state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
        internal = state["mask_decoder.transformer.layers.0.cross_attn_token_to_image."
                         "q_proj.weight"].shape[0]
        # Absent in checkpoints built without mask refinement: the strict check then lists
        # the missing mask_downscaling keys.
        md = state.get("prompt_encoder.mask_downscaling.3.weight")
        mask_in = md.shape[0] if md is not None else 16
        n_tokens = state["mask_decoder.mask_tokens.weight"].shape[0]
        iou_layers = [k for k in state if k.startswith("mask_decoder.iou_prediction_head.layers.")
                      and k.endswith(".weight")]
        iou_hidden = state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"cannot infer the architecture from the weights: missing or "
                              f"malformed {e}") from e
    fields = dict(img_size=grid * p, patch_size=p, encoder_embed_dim=dim, encoder_depth=depth,
                  encoder_num_heads=dim // head_dim, encoder_global_attn_indexes=global_idx,
                  window_size=window, mlp_ratio=mlp_ratio, prompt_embed_dim=prompt_dim,
                  mask_in_chans=mask_in, decoder_depth=dec_depth, decoder_mlp_dim=dec_mlp,
                  attention_downsample_rate=prompt_dim // internal,
                  num_multimask_outputs=n_tokens - 1, iou_head_depth=len(iou_layers),
                  iou_head_hidden_dim=iou_hidden)
    for variant in VARIANTS.values():
        if variant.encoder == "vit" and all(getattr(variant, k) == v
                                            for k, v in fields.items()):
            return variant
    log.info("weights match no named variant; building a custom ViT config "
             "(decoder heads assumed 8, as in SAM)")
    return ModelConfig(variant="custom", **fields)


def check_and_load(model: Sam, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load: every key present, none extra, every shape equal — or one error listing all."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", shapes)):
            if items:
                shown = "\n    ".join(items[:40])
                more = f"\n    ... and {len(items) - 40} more" if len(items) > 40 else ""
                parts.append(f"  {len(items)} {title}:\n    {shown}{more}")
        raise CheckpointError(f"{source} does not match the model exactly:\n" + "\n".join(parts))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _read_native(folder: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for f in (cfg_path, weights):
        if not f.is_file():
            raise CheckpointError(f"{folder}: native checkpoint folder lacks {f.name}")
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = ModelConfig.from_dict(meta["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config ({e})") from e
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from e
    return state, config, meta


def read_checkpoint(path: str | Path, format: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], ModelConfig, str]:
    """SAM-named weights, the config to build, and the format — without building the model."""
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        if format not in (None, "native"):
            raise CheckpointError(f"{path} is a native checkpoint; format={format!r} does not "
                                  "apply")
        state, config, _ = _read_native(folder)
        return state, config, "native"
    if format == "native":
        raise CheckpointError(f"{path}: format 'native' expects a folder with model.safetensors")
    state, _ = _find_state_dict(_torch_load_safe(path), path)
    naming = detect_naming(state)
    if naming == "ultrasam":
        if format in ("sam", "medsam"):
            raise CheckpointError(f"{path} holds UltraSam (mmdet) key names, not {format!r}")
        try:
            state = ultrasam_to_sam(state)
        except ConversionError as e:
            raise CheckpointError(f"{path}: {e}") from e
        fmt = "ultrasam"
    else:
        if format == "ultrasam":
            raise CheckpointError(f"{path} holds SAM key names, not UltraSam's")
        fmt = format or "sam"
        if format is None and "medsam" in path.name.lower():
            log.warning("%s: file name suggests MedSAM; using MedSAM preprocessing (plain "
                        "resize to a square, [0, 1] scaling). Pass format='sam' to override.",
                        path.name)
            fmt = "medsam"
    config = infer_config(state)
    config = config.replace(doubled_mlp_residual=(fmt == "ultrasam"),
                            preprocessing="medsam" if fmt == "medsam" else "sam")
    return state, config, fmt


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu",
               format: str | None = None) -> Sam:
    """Load a model strictly and safely (see the module docstring for the formats).

    ``path=None`` loads the default model bundled with the package. The returned model is in
    eval mode on ``device``; ``model.config`` records its variant, preprocessing and whether
    UltraSam's doubled residual is on; ``model.checkpoint_format`` the detected format.
    """
    if path is None:
        if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
            raise DefaultModelUnavailable(
                "no trained default model is bundled with this version of ultrasam yet; "
                "pass a checkpoint (Meta SAM, MedSAM, UltraSam or a converted folder)")
        path = DEFAULT_MODEL_DIR
    state, config, fmt = read_checkpoint(path, format)
    model = build_model(config)
    check_and_load(model, state, str(path))
    model.checkpoint_format = fmt  # type: ignore[attr-defined]
    return model.to(device).eval()


def checkpoint_info(path: str | Path, format: str | None = None) -> CheckpointInfo:
    state, config, fmt = read_checkpoint(path, format)
    model = build_model(config)
    check_and_load(model, state, str(path))
    return CheckpointInfo(str(path), fmt, config, sum(p.numel() for p in model.parameters()))


# ------------------------------------------------------------------------------ writing
LICENCES = {"ultrasam": "cc-by-nc-sa-4.0", "sam": "apache-2.0", "medsam": "apache-2.0"}


def save_native(model: Sam, out_dir: str | Path, *, source: str | None = None,
                source_format: str | None = None, card: str | None = None,
                licence: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``README.md`` (model card) to a folder.

    ``dtype`` (e.g. ``torch.float16``) stores the weights at reduced precision; loading casts
    them back to the model's dtype.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             .detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "ultrasam-native"})
    meta = {"format_version": NATIVE_VERSION, "model": model.config.to_dict(),
            "source": source, "source_format": source_format}
    (out / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    licence = licence or LICENCES.get(source_format or "", "other")
    (out / "README.md").write_text(card or default_card(model, source, source_format, licence),
                                   encoding="utf-8")
    return out


def default_card(model: Sam, source: str | None, source_format: str | None,
                 licence: str) -> str:
    """A minimal Hugging Face-style model card for a converted checkpoint."""
    c = model.config
    n = sum(p.numel() for p in model.parameters())
    src = Path(source).name if source else "unknown"
    notes = {
        "ultrasam": "UltraSam (Meyer et al., IJCARS 2025): SAM ViT-B fine-tuned on US-43d. "
                    "Loaded with UltraSam's doubled decoder-MLP residual, which this folder "
                    "records in config.json. Licence inherited from the UltraSam release: "
                    "CC-BY-NC-SA-4.0 (non-commercial, share-alike).",
        "medsam": "MedSAM (Ma et al., Nature Communications 2024). Expects MedSAM's "
                  "preprocessing (plain resize to a square, [0, 1] scaling), recorded in "
                  "config.json.",
        "sam": "Segment Anything (Kirillov et al., ICCV 2023) or a SAM-format fine-tune.",
    }.get(source_format or "", "Weights in ultrasam's native format.")
    return (f"---\nlicense: {licence}\nlibrary_name: ultrasam\npipeline_tag: mask-generation\n"
            f"tags: [ultrasound, segment-anything, medical-imaging]\n---\n\n"
            f"# {c.variant} converted from `{src}`\n\n{notes}\n\n"
            f"- architecture: {c.variant} ({c.encoder} encoder, {c.img_size} px input, "
            f"{c.embed_size}x{c.embed_size} embedding), {n:,} parameters\n"
            f"- preprocessing: {c.preprocessing}\n"
            f"- doubled decoder MLP residual: {c.doubled_mlp_residual}\n\n"
            "Not a medical device: research use only; outputs must be reviewed by a "
            "qualified person.\n")


def convert_checkpoint(src: str | Path, dst_dir: str | Path, format: str | None = None) -> Path:
    """Convert any supported checkpoint to the native folder format (``ultrasam convert``)."""
    model = load_model(src, format=format)
    return save_native(model, dst_dir, source=str(src),
                       source_format=getattr(model, "checkpoint_format", None))
