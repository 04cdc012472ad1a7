"""Writing output files so that a crash never leaves a half-written file under a final name.

Each file is written to a temporary name in its folder and renamed into place (atomic on one
filesystem), so a per-item JSON that exists is complete: it is the item's "done" marker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (``allow_nan=False``): a NaN that slipped through is an error, not bad JSON."""
    return json.dumps(obj, indent=indent, allow_nan=False)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (dumps_json(obj, indent=1) + "\n").encode("utf-8"))


def write_png_atomic(path: Path, rgb_or_grey: np.ndarray) -> None:
    """Lossless PNG of an H x W (grey) or H x W x 3 (RGB) uint8 array."""
    img = rgb_or_grey if rgb_or_grey.ndim == 2 else cv2.cvtColor(rgb_or_grey, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"could not encode {path}")
    write_bytes_atomic(path, buf.tobytes())


def remove_files(paths: list[Path], stop: Path) -> None:
    """Delete ``paths`` (best effort), then the folders they leave empty, up to ``stop``."""
    folders = set()
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        folders.add(p.parent)
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        while folder != stop and stop in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (other items live there) or already gone
            folder = folder.parent
