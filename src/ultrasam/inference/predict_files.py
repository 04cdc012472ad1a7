"""Segment image files from one prompt (the original ``predict_files`` API, kept for callers).

Batch work (folders, manifests, COCO, workers, resuming) lives in
:mod:`ultrasam.inference.batch`; this module re-exports its prompt helpers and runs one prompt
over a list of files through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .batch import Prompt, parse_box, parse_point, predict_batch
from .batch.overlay import overlay

__all__ = ["Prompt", "overlay", "parse_box", "parse_point", "predict_files"]


def predict_files(images: list[str | Path], out_dir: str | Path, prompt: Prompt,
                  checkpoint: str | Path | None = None, format: str | None = None,
                  frame: int | None = None, slice: int | None = None, axis: int = 0,
                  refine: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Segment each image with the same prompt; write ``<stem>.mask.png``, ``.overlay.png``
    and ``.json`` under ``out_dir`` (mirroring the images' folders). Returns one flat record per
    image: the item record with its single object's fields (``scores``, ``selected``, ``rle``,
    ``area_px``, ``area_mm2``, ``prompt``) at the top level.

    Raises:
        ValueError: no prompt, or an image failed (the first failure's message).
    """
    if prompt.is_empty():
        raise ValueError("give at least one --point or a --box")
    records: list[dict[str, Any]] = []
    predict_batch(list(images), out_dir, prompt, checkpoint=checkpoint, format=format,
                  device=device, frame=frame, slice=slice, axis=axis, refine=refine,
                  overwrite=True, on_record=lambda r, _: records.append(r))
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        raise ValueError(f"{failed[0]['image']}: {failed[0]['error']}")
    return [{**{k: v for k, v in r.items() if k != "objects"}, **r["objects"][0]}
            for r in records]
