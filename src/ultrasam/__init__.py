"""ultrasam: SAM-family promptable segmentation for ultrasound.

Public API only; importing this package has no side effects (heavy and optional dependencies
load when first used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["load_model", "Predictor", "build_model", "ModelConfig", "get_config",
           "convert_checkpoint", "save_native", "checkpoint_info", "__version__"]

if TYPE_CHECKING:
    from .config import ModelConfig, get_config
    from .inference.predictor import Predictor
    from .modeling import build_model
    from .weights.checkpoints import checkpoint_info, convert_checkpoint, load_model, save_native

_LAZY = {
    "load_model": "weights.checkpoints", "convert_checkpoint": "weights.checkpoints",
    "save_native": "weights.checkpoints", "checkpoint_info": "weights.checkpoints",
    "Predictor": "inference.predictor", "build_model": "modeling", "ModelConfig": "config",
    "get_config": "config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ultrasam' has no attribute {name!r}")
