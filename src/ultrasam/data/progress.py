"""An optional progress bar: tqdm when installed and wanted, else the plain iterable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable[Any], enabled: bool, **kw: Any) -> Iterable[Any]:
    """``tqdm(iterable, **kw)`` when ``enabled`` and tqdm is installed, else ``iterable``."""
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # optional dependency: no bar, same work
        return iterable
    return tqdm(iterable, **kw)
