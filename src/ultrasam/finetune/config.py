"""Every option of a fine-tuning run, with the library's defaults (the CLI passes only what the
user gave)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .encoder import MODES
from .heads import HEADS

BALANCE: tuple[str, ...] = ("loss", "sampler", "none")


@dataclass(frozen=True)
class FinetuneConfig:
    """Encoder: ``checkpoint`` (anything ``load_model`` accepts; None and no ``variant`` =
    the bundled default model) or ``variant`` (random init). ``mode``: linear / full /
    partial (last ``unfreeze`` encoder units) / lora (ViT, rank ``lora_rank``).
    ``head`` (classification): linear (pooled) or attention (attention pooling);
    ``decoder_width`` (segmentation): channels of the FPN decoder (its cost grows with the
    square: 32 trains about 3x faster than 64 on a CPU).
    Data: ``datasets`` of a corpus, the image-level ``label_field``, segmentation
    ``structures`` (default: all in the data), ``fractions`` of the non-official images for
    train / val / test, ``label_fraction`` of the training groups (after the
    ``max_images`` cap per split: seeded whole groups, for quick runs; so smaller fractions
    are subsets of larger ones). ``balance``: class-weighted loss, a balanced sampler
    or nothing (classification). ``augment``: the training module's batched ultrasound
    augmentation (not in linear mode, whose features are computed once). ``max_seconds``:
    training time budget, checked between epochs."""

    checkpoint: str | None = None
    variant: str | None = None
    mode: str = "linear"
    head: str = "linear"
    unfreeze: int = 2
    lora_rank: int = 4
    epochs: int = 30
    patience: int = 6
    batch_size: int = 16
    lr: float = 3e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-4
    dropout: float = 0.0
    decoder_width: int = 64
    balance: str = "loss"
    augment: bool = True
    datasets: tuple[str, ...] | None = None
    label_field: str = "label"
    structures: tuple[str, ...] | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    label_fraction: float = 1.0
    max_images: int | None = None
    max_seconds: float | None = None
    n_boot: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("datasets", "structures"):
            v = getattr(self, name)
            if isinstance(v, (list, str)):
                object.__setattr__(self, name, (v,) if isinstance(v, str) else tuple(v))
        object.__setattr__(self, "fractions", tuple(float(f) for f in self.fractions))
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose from {list(MODES)}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose from {list(HEADS)}")
        if self.balance not in BALANCE:
            raise ValueError(f"unknown balance {self.balance!r}; choose from {list(BALANCE)}")
        if len(self.fractions) != 3:
            raise ValueError(f"fractions must be (train, val, test), got {self.fractions}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if not 4 <= self.decoder_width <= 1024:
            raise ValueError(f"decoder_width must be in 4..1024, got {self.decoder_width}")
        if self.max_images is not None and self.max_images < 2:
            raise ValueError(f"max_images must be >= 2, got {self.max_images}")
        for name in ("lr", "encoder_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def replace(self, **changes: Any) -> FinetuneConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
