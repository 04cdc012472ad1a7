"""Shared by the CPU benchmarks: Meta's ``segment_anything`` 1.0 for same-run comparisons,
wall-clock timing of repeated calls, and the CPU's name for the records.

Install it with ``pip install segment-anything==1.0 --no-deps``; it imports torchvision at
package import, so where torchvision is absent the parity-fixture script's stand-ins (PIL
bilinear resize, exactly torchvision's PIL path) are registered first.
"""

from __future__ import annotations

import importlib.util
import platform
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def import_segment_anything() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_parity_fixture", ROOT / "tests" / "fixtures" / "make_parity_fixture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install_torchvision_stand_in()
    try:
        import segment_anything
    except ImportError as e:
        raise SystemExit("this benchmark needs Meta's reference: "
                         "pip install segment-anything==1.0 --no-deps") from e
    return segment_anything


def times_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - t))
    return out


def cpu_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
