"""A built corpus's folder layout: the per-dataset annotation file, ``lodo/``, finding datasets."""

from __future__ import annotations

from pathlib import Path

ANNOTATIONS = "annotations.coco.json"
LODO_DIR = "lodo"


def discover_datasets(corpus_dir: Path) -> list[str]:
    """Names of the dataset folders (those holding ``annotations.coco.json``), sorted."""
    corpus_dir = Path(corpus_dir)
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus_dir}")
    return sorted(p.name for p in corpus_dir.iterdir()
                  if p.is_dir() and p.name != LODO_DIR and (p / ANNOTATIONS).is_file())

