"""Reduced-precision inference on the CPU: when bf16 autocast pays, and how to enter it.

A CPU with native bf16 arithmetic (AVX512-BF16 or AMX, as oneDNN reports it) runs the
convolutions of FusionNet 1.6-2.0x faster per prompt under ``torch.autocast("cpu",
torch.bfloat16)`` with BatchNorm folded and the weights in channels_last, and its masks agree
with fp32 to a mean Dice of 0.9996 (box) / 0.9990 (centroid click) on 122 MMOTU-2D val instances
(``benchmarks/bench_precision.py`` records both). Without native bf16 the same autocast is
emulated and *slower*, hence ``auto``: bf16 only where the hardware has it.

Autocast state is thread-local: :func:`precision_context` must be entered on the thread that
runs the model (the server's model threads each enter it around their calls).

torch is imported inside the functions, so the names and :func:`check_precision` cost nothing
to import (the server's settings and the CLI validate ``--precision`` with them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (False when the check is unavailable)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``auto`` -> ``bf16`` on a CPU with native bf16, else ``fp32``; other values checked.

    bf16 is only offered on the CPU here: on a GPU the caller's own autocast is the place.
    """
    import torch

    check_precision(precision)
    on_cpu = torch.device(device).type == "cpu"
    if precision == "auto":
        return "bf16" if on_cpu and cpu_has_native_bf16() else "fp32"
    if precision == "bf16" and not on_cpu:
        raise ValueError("precision bf16 is a CPU setting; on a GPU use torch.autocast")
    return precision


def prepare_model(model: nn.Module, precision: str) -> nn.Module:
    """In place, for an inference-only model: for bf16, BatchNorm folded into the convolutions
    (``modeling.fold``; the model is put in eval mode) and channels_last weights (oneDNN's fast
    layout for bf16 convolutions; a no-op for models without 4-D weights). The weights stay
    fp32: autocast casts per op. fp32 models are left untouched, so they stay bit-exact with
    the unprepared model."""
    import torch

    from ..modeling.fold import fold_batchnorm

    if precision == "bf16":
        fold_batchnorm(model.eval())
        model.to(memory_format=torch.channels_last)
    return model


@contextlib.contextmanager
def precision_context(precision: str) -> Iterator[None]:
    """Run the model calls inside under ``precision`` (``fp32`` or ``bf16``, resolved)."""
    if precision == "bf16":
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield
