"""Training: prompt simulation, losses, schedules, batching and the loop (``train(cfg)``).

Nothing heavy is imported here; ``from ultrasam.train import train, load_config`` loads the
loop on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrainConfig", "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainConfig", "load_config"):
        from . import config
        return getattr(config, name)
    if name == "train":
        from .loop import train
        return train
    raise AttributeError(f"module 'ultrasam.train' has no attribute {name!r}")
