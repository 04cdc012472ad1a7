"""What an evaluation run produces per method: the protocol names and one task's results.

A task is one protocol (``box``, ``point``, ...; see :mod:`ultrasam.evaluate.protocol`) or one
sweep setting (``"<sweep>|<protocol>|<level>"``); :class:`TaskResult` holds its predictions
and per-instance records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("box", "box_refine", "point", "point_refine")
NOC = "noc"
ALL_PROTOCOLS = (*PROTOCOLS, NOC)
BASELINE_PROTOCOLS = ("box",)


@dataclass
class TaskResult:
    """Predictions and per-instance records of one protocol or sweep setting."""

    results: list[dict[str, Any]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    # Wall and process CPU time spent in the task (reported for the interactive protocol).
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    n_images: int = 0

