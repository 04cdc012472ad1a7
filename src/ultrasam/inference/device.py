"""Validate a user's ``--device`` before any work starts, with one clear line when unusable."""

from __future__ import annotations

import torch


def resolve_device(text: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` -> a usable :class:`torch.device`.

    Raises:
        ValueError: the string is not a device name, or this torch build / machine cannot use
            it (a CPU-only build asked for CUDA, an index beyond the visible GPUs, ...).
    """
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"--device {text!r} is not a device name (try cpu, cuda, cuda:0 or mps)"
                         ) from e
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise ValueError(f"--device {text}: this torch build has no CUDA support "
                             f"(torch {torch.__version__}); use --device cpu")
        count = torch.cuda.device_count()
        if count == 0:
            raise ValueError(f"--device {text}: no CUDA device is visible on this machine; "
                             "use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"--device {text}: only {count} CUDA device(s) visible "
                             f"(cuda:0..cuda:{count - 1})")
        return device
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {text}: Apple MPS is not available here; use cpu")
        return device
    raise ValueError(f"--device {text}: unsupported device type {device.type!r} "
                     "(use cpu, cuda or mps)")
