"""Switches that make a :class:`~ultrasam.modeling.Sam` fast on a GPU, all off by default.

Eager fp32 with the plain SDPA attention stays the default everywhere (the parity tests pin it);
:func:`optimise_for_gpu` opts one model in, in place, without renaming any parameter (state
dicts load and save as before):

- the image encoder's attention without the materialised rel-pos bias
  (:mod:`ultrasam.modeling.flex_attention`: ``"flex"``, ``"fold"`` or ``"auto"``);
- ``torch.compile`` of the image encoder and of the mask decoder (in place, ``nn.Module.compile``),
  optionally with CUDA graphs (``mode="reduce-overhead"``: shapes must stay static, and a
  training loop must call ``torch.compiler.cudagraph_mark_step_begin()`` before each step);
- activation checkpointing of the encoder blocks (memory for compute, training only);
- the mask decoder kept in fp32 under an autocast region (inference: the decoder costs ~0.4 %
  of the encoder's FLOPs per prompt, and running it in bf16 doubles the logit error).

bf16 itself is the caller's choice (``torch.autocast``), and so is the optimiser:
:func:`adamw` builds AdamW with the fused kernel on CUDA.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .flex_attention import BACKENDS
from .image_encoder import Attention, ImageEncoderViT

log = logging.getLogger(__name__)


def set_attention_backend(module: nn.Module, backend: str) -> int:
    """Set the attention backend of every SAM ViT attention under ``module``.

    backend: "sdpa" (the default path), "flex", "fold" or "auto" (see
    :mod:`ultrasam.modeling.flex_attention`). Returns the number of attention modules changed;
    raises ValueError for an unknown backend or when ``module`` holds no SAM ViT attention.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {BACKENDS}")
    n = 0
    for m in module.modules():
        if isinstance(m, Attention):
            m.backend = backend
            n += 1
    if n == 0:
        raise ValueError(f"{type(module).__name__} has no SAM ViT attention to switch")
    return n


def keep_decoder_fp32(decoder: nn.Module) -> None:
    """Run ``decoder`` in fp32 even inside an autocast region (inputs cast up, autocast off).

    Overrides the instance's ``forward`` (parameter names, state dicts and hooks unchanged).
    The decoder's tensor arguments (embeddings, positional encodings, prompt embeddings) are
    cast to fp32; its outputs are fp32.
    """
    if getattr(decoder, "_ultrasam_fp32", False):
        return
    inner = decoder.forward

    @functools.wraps(inner)
    def forward(*args: Any, **kwargs: Any) -> Any:
        def up(t: Any) -> Any:
            return t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t

        device = next(decoder.parameters()).device.type
        with torch.autocast(device_type=device, enabled=False):
            return inner(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})

    decoder.forward = forward  # type: ignore[method-assign]
    decoder._ultrasam_fp32 = True  # type: ignore[assignment]


def optimise_for_gpu(model: nn.Module, *, attention: str = "auto", compile: bool = True,
                     compile_decoder: bool = True, cuda_graphs: bool = False,
                     activation_checkpointing: bool = False, decoder_fp32: bool = False,
                     compile_mode: str | None = None, compile_backend: str = "inductor"
                     ) -> nn.Module:
    """Opt a Sam model into the fast path, in place; returns the model.

    attention: the encoder's attention backend ("sdpa" keeps the default path).
    compile: ``torch.compile`` the image encoder (static shapes: one graph per batch size);
    compile_decoder: also the mask decoder (its prompt count may vary: dynamic after the first
    recompile). cuda_graphs: compile with ``mode="reduce-overhead"``; compile_mode overrides
    the mode outright. activation_checkpointing: recompute each encoder block in backward.
    decoder_fp32: see :func:`keep_decoder_fp32`. compile_backend: ``torch.compile``'s backend
    (another than Inductor, e.g. "aot_eager", traces without generating code: tests; the
    mode then does not apply).
    The call is cheap; compilation happens on the first forward of each shape.
    """
    for name in ("image_encoder", "mask_decoder"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise TypeError(f"expected a Sam model with an {name}, got {type(model).__name__}")
    encoder = model.image_encoder
    if not isinstance(encoder, ImageEncoderViT):
        raise TypeError(f"the fast path needs SAM's ViT encoder, got {type(encoder).__name__}")
    if cuda_graphs and compile_mode is not None:
        raise ValueError("give either cuda_graphs or compile_mode, not both")
    set_attention_backend(encoder, attention)
    encoder.gradient_checkpointing = activation_checkpointing
    if decoder_fp32:
        keep_decoder_fp32(model.mask_decoder)
    mode = compile_mode or ("reduce-overhead" if cuda_graphs else None)
    if compile:
        # torch.compile takes a mode for Inductor only.
        kwargs: dict[str, Any] = {"backend": compile_backend}
        if compile_backend == "inductor":
            kwargs["mode"] = mode
        encoder.compile(dynamic=False, **kwargs)
        if compile_decoder:
            model.mask_decoder.compile(**kwargs)
    log.info("fast path: attention=%s compile=%s decoder=%s mode=%s checkpointing=%s "
             "decoder_fp32=%s", attention, compile, compile and compile_decoder,
             mode or "default",
             activation_checkpointing, decoder_fp32)
    return model


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float = 0.01,
          betas: tuple[float, float] = (0.9, 0.999), device: torch.device | str = "cpu"
          ) -> torch.optim.AdamW:
    """AdamW with the fused (single-kernel) update on CUDA, the default elsewhere."""
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas,
                             fused=fused or None)
