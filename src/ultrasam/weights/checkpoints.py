"""Loading and saving weights: safe, strict, bounded, with the format detected from the contents.

Formats:
- ``sam``: Meta SAM ``.pth`` (flat state dict) or a SAM-named dict wrapped under ``model``;
- ``medsam``: exactly SAM's keys, but MedSAM's preprocessing (recorded in the model's config);
- ``ultrasam``: UltraSam's mmengine container (``state_dict`` in mmdet naming), loaded with
  UltraSam's doubled decoder-MLP residual switched on;
- ``native``: our folder — ``model.safetensors`` + ``config.json`` (with the weights' sha256)
  + ``README.md``.

Every load is
- safe: safetensors, or a ``torch.save`` zip read by :mod:`ultrasam.weights.torch_files` (records,
  pickle opcodes and globals checked before ``torch.load(weights_only=True)``; nothing from the
  file runs);
- bounded: the config (read or inferred) is checked against fixed bounds, the model is built on
  the ``meta`` device (no memory, no random initialisation), every key and shape is compared
  with it, and only then are the file's tensors assigned as the model's weights;
- strict: missing, unexpected or mis-shaped keys, non-finite values, or a native folder whose
  weights do not match their recorded sha256 raise :class:`CheckpointError` (first line says
  what; further lines list offenders).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..config import VARIANTS, ModelConfig
from ..errors import CheckpointError, DefaultModelUnavailable, UserInputError
from ..modeling import build_model
from ..modeling.base import PromptableModel
from .checkpoint_checks import (
    check_config_bounds,
    check_finite,
    check_parameter_count,
    contiguous_indices,
)
from .convert import ConversionError, ultrasam_to_sam
from .torch_files import load_torch_file

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("sam", "medsam", "ultrasam", "native")
NATIVE_VERSION = 1
DEFAULT_MODEL_DIR = Path(__file__).parent / "default"
HASH_KEY = "weights_sha256"  # config.json: sha256 of model.safetensors
MAX_CONFIG_BYTES = 1 << 20
ALIGNMENT = 64  # bytes, as torch.save aligns its storages

__all__ = [
    "FORMATS",
    "CheckpointError",
    "CheckpointInfo",
    "DefaultModelUnavailable",
    "checkpoint_info",
    "convert_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_native",
]


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The checkpoint path does not exist."""


@dataclass
class CheckpointInfo:
    """What a file holds, without materialising a model."""

    path: str
    format: str
    config: ModelConfig
    n_parameters: int
    source_format: str | None = None
    weights_sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "variant": self.config.variant,
                "encoder": self.config.encoder, "parameters": self.n_parameters,
                "preprocessing": self.config.preprocessing,
                "doubled_mlp_residual": self.config.doubled_mlp_residual,
                "img_size": self.config.img_size, "source_format": self.source_format,
                "weights_sha256": self.weights_sha256}


# ------------------------------------------------------------------------------ reading
def _find_state_dict(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensor dict inside a container, and where it was found."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: top level is {type(obj).__name__}, not a dict")
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner) \
                and any(isinstance(v, torch.Tensor) for v in inner.values()):
            obj, where = inner, wrapper
            break
    else:
        where = "top level"
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k in obj if k not in tensors)
    if not tensors:
        raise CheckpointError(f"{path}: no tensors found ({where})")
    if others and where == "top level":
        raise CheckpointError(f"{path}: non-tensor entries beside the weights: {others[:10]}")
    if not all(isinstance(k, str) for k in tensors):
        raise CheckpointError(f"{path}: weight names must be strings")
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


def _dim(state: dict[str, torch.Tensor], key: str, axis: int, ndim: int) -> int:
    t = state[key]
    if t.ndim != ndim:
        raise ValueError(f"{key} has {t.ndim} dimensions, expected {ndim}")
    return int(t.shape[axis])


def infer_config(state: dict[str, torch.Tensor], source: str = "weights") -> ModelConfig:
    """Rebuild a ViT config from SAM-named weights (shapes carry every size but one).

    The decoder's head count is not recoverable from weights; known variants match exactly,
    otherwise SAM's 8 heads are assumed (with a notice). Layer indices must run 0..N-1.
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
        grid, dim = _dim(state, "image_encoder.pos_embed", 1, 4), \
            _dim(state, "image_encoder.pos_embed", 3, 4)
        p = _dim(state, "image_encoder.patch_embed.proj.weight", 3, 4)
        depth = contiguous_indices(state, r"image_encoder\.blocks\.(\d+)\.", source)
        head_dim = _dim(state, "image_encoder.blocks.0.attn.rel_pos_h", 1, 2)
        rel = [_dim(state, f"image_encoder.blocks.{i}.attn.rel_pos_h", 0, 2)
               for i in range(depth)]
        global_idx = tuple(i for i, r in enumerate(rel) if r == 2 * grid - 1)
        windowed = [r for r in rel if r != 2 * grid - 1]
        window = (windowed[0] + 1) // 2 if windowed else 14
        prompt_dim = _dim(state, "image_encoder.neck.0.weight", 0, 4)
        mlp_ratio = _dim(state, "image_encoder.blocks.0.mlp.lin1.weight", 0, 2) / max(dim, 1)
        dec_depth = contiguous_indices(state, r"mask_decoder\.transformer\.layers\.(\d+)\.",
                                       source)
        dec_mlp = _dim(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", 0, 2)
        internal = _dim(state, "mask_decoder.transformer.layers.0.cross_attn_token_to_image."
                               "q_proj.weight", 0, 2)
        # Absent in checkpoints built without mask refinement: the strict check then lists
        # the missing mask_downscaling keys.
        key = "prompt_encoder.mask_downscaling.3.weight"
        mask_in = _dim(state, key, 0, 4) if key in state else 16
        n_tokens = _dim(state, "mask_decoder.mask_tokens.weight", 0, 2)
        iou_depth = contiguous_indices(
            state, r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight$", source)
        iou_hidden = _dim(state, "mask_decoder.iou_prediction_head.layers.0.weight", 0, 2)
    except (KeyError, ValueError, IndexError, ZeroDivisionError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{source}: cannot infer the architecture from the weights: "
                              f"missing or malformed {e}") from e
    if min(head_dim, internal, p) < 1:
        raise CheckpointError(f"{source}: cannot infer the architecture: empty dimensions")
    fields: dict[str, Any] = {
        "img_size": grid * p, "patch_size": p, "encoder_embed_dim": dim,
        "encoder_depth": depth, "encoder_num_heads": dim // head_dim,
        "encoder_global_attn_indexes": global_idx, "window_size": window,
        "mlp_ratio": mlp_ratio, "prompt_embed_dim": prompt_dim, "mask_in_chans": mask_in,
        "decoder_depth": dec_depth, "decoder_mlp_dim": dec_mlp,
        "attention_downsample_rate": prompt_dim // internal,
        "num_multimask_outputs": n_tokens - 1, "iou_head_depth": iou_depth,
        "iou_head_hidden_dim": iou_hidden}
    for variant in VARIANTS.values():
        if variant.encoder == "vit" and all(getattr(variant, k) == v
                                            for k, v in fields.items()):
            return variant
    log.info("weights match no named variant; building a custom ViT config "
             "(decoder heads assumed 8, as in SAM)")
    return ModelConfig(variant="custom", **fields)


class _SkipRandomInit(TorchFunctionMode):
    """Random initialisation skipped while building on the ``meta`` device: it computes nothing
    there, yet PyTorch's meta ``normal_`` is a Python reference that imports ``torch._dynamo``
    on first use (seconds; more than the whole rest of building a SAM on ``meta``)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init" or \
                getattr(func, "__name__", None) == "normal_":
            return args[0] if args else kwargs["tensor"]  # init functions return the tensor
        if func is torch.randn:
            return torch.empty(*args, **kwargs)
        return func(*args, **kwargs)


def build_empty(config: ModelConfig, source: str) -> PromptableModel:
    """The model of a checked config on the ``meta`` device: shapes only, no memory, no random
    initialisation (:func:`check_and_load` then assigns the real weights)."""
    check_config_bounds(config, source)
    with torch.device("meta"), _SkipRandomInit():
        model = build_model(config)
    check_parameter_count(sum(p.numel() for p in model.parameters()), source)
    return model


def _mismatch_report(model: torch.nn.Module, state: dict[str, torch.Tensor],
                     source: str) -> str | None:
    """None when keys and shapes match exactly, else a one-line summary + listed offenders."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if not (missing or unexpected or shapes):
        return None
    groups = (("missing keys", missing), ("unexpected keys", unexpected),
              ("shape mismatches", shapes))
    first = next(items[0] for _, items in groups if items)
    counts = ", ".join(f"{len(items)} {title}" for title, items in groups if items)
    parts = [f"{source} does not match the model exactly: {counts} (first: {first})"]
    for title, items in groups:
        if items:
            shown = "\n    ".join(items[:40])
            more = f"\n    ... and {len(items) - 40} more" if len(items) > 40 else ""
            parts.append(f"  {len(items)} {title}:\n    {shown}{more}")
    return "\n".join(parts)


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict check without loading: every key present, none extra, every shape equal, every
    value finite — or one :class:`CheckpointError` (summary first line, offenders below)."""
    report = _mismatch_report(model, state, source)
    if report:
        raise CheckpointError(report)
    check_finite(state, source)


def check_and_load(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load (see :func:`check_state`), then assign the tensors as the model's weights.

    Works on a model built on the ``meta`` device (:func:`build_empty`): tensors are cast to
    the model's dtypes one by one inside ``state`` (so a fp16 file never coexists whole with
    its fp32 copy) and assigned without a second copy; the non-persistent buffers are then
    computed from the config.
    """
    check_state(model, state, source)
    expected = model.state_dict()
    seen: set[tuple[int, int]] = set()
    for k in list(state):
        v = state[k].to(expected[k].dtype)
        where = (v.untyped_storage().data_ptr(), v.storage_offset())
        # Own, contiguous, aligned memory for every weight: views sharing a storage get their
        # own copies, and a tensor read at an unaligned offset (safetensors) is copied so that
        # kernels take the same vectorised paths as for a freshly built model (same outputs).
        if not v.is_contiguous() or where in seen or v.data_ptr() % ALIGNMENT:
            v = v.contiguous().clone()
        seen.add(where)
        state[k] = v
    model.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(model)


def _materialise_buffers(model: torch.nn.Module) -> None:
    """Compute what no checkpoint stores (non-persistent buffers), then check nothing is left
    on the ``meta`` device."""
    if isinstance(model, PromptableModel) and model.pixel_mean.is_meta:
        device = next(model.parameters()).device
        c = model.config
        model.pixel_mean = torch.tensor(c.pixel_mean, device=device).view(-1, 1, 1)
        model.pixel_std = torch.tensor(c.pixel_std, device=device).view(-1, 1, 1)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    left += [f"{mod_name}.{attr}" for mod_name, mod in model.named_modules()
             for attr, t in vars(mod).items() if isinstance(t, torch.Tensor) and t.is_meta]
    if left:  # a module with state that is neither loaded nor known here: a bug, not the file
        raise RuntimeError(f"tensors left unmaterialised after loading: {left[:5]}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_native_config(folder: Path) -> tuple[ModelConfig, dict[str, Any]]:
    cfg_path = folder / "config.json"
    for f in (cfg_path, folder / "model.safetensors"):
        if not f.is_file():
            raise CheckpointError(f"{folder}: native checkpoint folder lacks {f.name}")
    try:
        if cfg_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
            raise TypeError("no 'model' object")
        version = meta.get("format_version", NATIVE_VERSION)
        if not isinstance(version, int) or version > NATIVE_VERSION:
            raise ValueError(f"format_version {version!r} is newer than this ultrasam reads "
                             f"({NATIVE_VERSION})")
        config = ModelConfig.from_dict(meta["model"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError,
            RecursionError, OSError) as e:
        raise CheckpointError(f"{cfg_path}: invalid config ({e})") from e
    check_config_bounds(config, str(cfg_path))
    return config, meta


def _verify_hash(folder: Path, meta: dict[str, Any]) -> str | None:
    """Check model.safetensors against the sha256 recorded in config.json (when recorded)."""
    weights = folder / "model.safetensors"
    recorded = meta.get(HASH_KEY)
    if recorded is None:
        log.debug("%s: config.json records no %s (written before hashes were recorded); "
                  "weights not verified", folder, HASH_KEY)
        return None
    actual = _sha256(weights)
    if not isinstance(recorded, str) or actual != recorded.lower():
        raise CheckpointError(f"{weights}: sha256 {actual[:16]}... does not match the "
                              f"{str(recorded)[:16]}... recorded in config.json: the file was "
                              "changed or corrupted")
    return actual


def _read_native(folder: Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, meta = _read_native_config(folder)
    weights = folder / "model.safetensors"
    meta["_verified_sha256"] = _verify_hash(folder, meta)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
        raise CheckpointError(f"{weights}: unreadable safetensors file ({e})") from e
    return state, config, meta


def _resolve(path: str | Path | None, format: str | None) -> Path:
    if format is not None and format not in FORMATS:
        raise UserInputError(f"unknown format {format!r}; expected one of {FORMATS}")
    if path is None:
        if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
            raise DefaultModelUnavailable(
                "no trained default model is bundled with this version of ultrasam yet; "
                "pass a checkpoint (Meta SAM, MedSAM, UltraSam or a converted folder)")
        return DEFAULT_MODEL_DIR
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint not found: {path}")
    return path


def _read(path: Path, format: str | None
          ) -> tuple[dict[str, torch.Tensor], ModelConfig, str, str | None]:
    """Weights (SAM naming), config, format and the verified sha256 (native folders)."""
    if path.is_dir() or path.suffix == ".safetensors":
        folder = path if path.is_dir() else path.parent
        if format not in (None, "native"):
            raise CheckpointError(f"{path} is a native checkpoint; format={format!r} does not "
                                  "apply")
        state, config, meta = _read_native(folder)
        return state, config, "native", meta["_verified_sha256"]
    if format == "native":
        raise CheckpointError(f"{path}: format 'native' expects a folder with model.safetensors")
    state, _ = _find_state_dict(load_torch_file(path), path)
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
    config = infer_config(state, str(path))
    config = config.replace(doubled_mlp_residual=(fmt == "ultrasam"),
                            preprocessing="medsam" if fmt == "medsam" else "sam")
    return state, config, fmt, None


def read_checkpoint(path: str | Path, format: str | None = None
                    ) -> tuple[dict[str, torch.Tensor], ModelConfig, str]:
    """SAM-named weights, the config to build, and the format — without building the model."""
    state, config, fmt, _ = _read(_resolve(path, format), format)
    return state, config, fmt


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu",
               format: str | None = None) -> PromptableModel:
    """Load a model strictly and safely (see the module docstring for the formats).

    ``path=None`` loads the default model bundled with the package. The returned model is in
    eval mode on ``device``; ``model.config`` records its variant, preprocessing and whether
    UltraSam's doubled residual is on; ``model.checkpoint_format`` the detected format.
    Raises :class:`CheckpointError` (a ``ValueError``) for any file refused.
    """
    resolved = _resolve(path, format)
    state, config, fmt, _ = _read(resolved, format)
    model = build_empty(config, str(resolved))
    check_and_load(model, state, str(resolved))
    del state
    model.checkpoint_format = fmt  # type: ignore[assignment]
    return model.to(device).eval()


def checkpoint_info(path: str | Path, format: str | None = None) -> CheckpointInfo:
    """Describe a checkpoint after the same checks as :func:`load_model` (nothing is built
    beyond shapes on the ``meta`` device)."""
    resolved = _resolve(path, format)
    state, config, fmt, sha = _read(resolved, format)
    model = build_empty(config, str(resolved))
    check_state(model, state, str(resolved))
    return CheckpointInfo(str(resolved), fmt, config,
                          sum(p.numel() for p in model.parameters()), weights_sha256=sha)


# ------------------------------------------------------------------------------ writing
LICENCES = {"ultrasam": "cc-by-nc-sa-4.0", "sam": "apache-2.0", "medsam": "apache-2.0"}


def save_native(model: PromptableModel, out_dir: str | Path, *, source: str | None = None,
                source_format: str | None = None, card: str | None = None,
                licence: str | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``README.md`` (model card) to a folder.

    ``dtype`` (e.g. ``torch.float16``) stores the weights at reduced precision; loading casts
    them back to the model's dtype. ``config.json`` records the sha256 of ``model.safetensors``
    (``weights_sha256``), which loading verifies. Non-finite weights are refused.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             .detach().cpu().contiguous() for k, v in model.state_dict().items()}
    check_finite(state, f"model to save in {out}")
    weights = out / "model.safetensors"
    save_file(state, str(weights), metadata={"format": "ultrasam-native"})
    meta = {"format_version": NATIVE_VERSION, "model": model.config.to_dict(),
            "source": source, "source_format": source_format, HASH_KEY: _sha256(weights)}
    (out / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n",
                                     encoding="utf-8")
    licence = licence or LICENCES.get(source_format or "", "other")
    (out / "README.md").write_text(card or default_card(model, source, source_format, licence),
                                   encoding="utf-8")
    return out


def default_card(model: PromptableModel, source: str | None, source_format: str | None,
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
