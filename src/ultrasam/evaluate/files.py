"""The evaluation folder's file helpers: reading an annotated image, writing JSON and CSV.

Shared by the protocol (which writes metrics and predictions) and the report (which reads the
images back for overlays and writes the summary), so neither imports the other.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def read_image(path: Path, height: int, width: int) -> np.ndarray:
    """H x W x 3 uint8 RGB (grey replicated), checked against the annotated size."""
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    if arr.shape[:2] != (height, width):
        raise ValueError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, annotated {width}x{height}")
    return arr


def finite(x: Any) -> Any:
    """``x`` with every non-finite float replaced by None (JSON has no NaN), numpy scalars as
    Python numbers, tuples as lists; dicts and lists are walked."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, np.generic):
        return finite(x.item())
    return x


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys), NaN written as null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(finite(data), sort_keys=True, indent=1) + "\n", encoding="utf-8")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows as CSV; columns are the union of keys in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in finite(r).items()})
