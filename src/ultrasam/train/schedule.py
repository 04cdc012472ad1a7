"""Learning-rate schedule as a pure function of the optimiser step.

The loop sets ``lr = base_lr * lr_factor(step, ...)`` before every update, so the scheduler's
whole state is the step number (saved in every checkpoint).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def lr_factor(step: int, *, total_steps: int, kind: str = "step", warmup_steps: int = 0,
              warmup_factor: float = 0.001, milestones: Sequence[int] = (),
              gamma: float = 0.1, min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimiser step ``step`` (0-based).

    Warm-up: linear from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``. Then
    ``step``: x ``gamma`` for every milestone <= step; ``cosine``: half cosine from 1 at the end
    of warm-up to ``min_factor`` at ``total_steps``; ``constant``: 1.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if kind not in ("step", "cosine", "constant"):
        raise ValueError(f"unknown schedule kind {kind!r}; expected step, cosine or constant")
    if warmup_steps > 0 and step < warmup_steps:
        alpha = step / warmup_steps
        warm = warmup_factor * (1.0 - alpha) + alpha
    else:
        warm = 1.0
    if kind == "step":
        decay = gamma ** bisect.bisect_right(sorted(milestones), step)
    elif kind == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        decay = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0
    return warm * decay
