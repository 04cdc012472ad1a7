"""Training and evaluation datasets: COCO files, corpus folders and packs -> typed samples.

Every reader is a map-style dataset (``len`` + ``[i]``, usable by ``torch.utils.data.DataLoader``)
returning :class:`Sample`. Sources it understands:

- a COCO JSON file: a dataset's ``annotations.coco.json`` (``file_name`` relative to the
  ``images/`` folder beside it), a class-agnostic merge (``file_name`` relative to the corpus
  folder, named by ``info.image_root`` relative to the JSON's folder, else the JSON's folder);
- a corpus folder: with ``split`` given and ``<split>.coco.json`` present, that merge;
  otherwise every ``<dataset>/annotations.coco.json``;
- a pack folder (``pack.json``, see :mod:`ultrasam.data.pack`): open it with
  :func:`ultrasam.data.factory.open_dataset`, which picks the reader for a path.

``split`` selects images whose ``split`` field equals it. Per-dataset files hold only official
splits, so there ``split="train"`` also takes the images without an official split (everything
not officially held out); merged files have no null splits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .coco import decode_rle, read_coco
from .decode import read_image
from .sample import Sample, spacing_of
from .selection import check_split, norm_name, split_matches

ANNOTATIONS = "annotations.coco.json"

# Sample and read_image live in .sample and .decode; re-exported for callers that read a
# COCO dataset and its images through this module.
__all__ = ["ANNOTATIONS", "CocoDataset", "Sample", "coco_files", "read_image", "sample_weights",
           "weighted_sampler"]


@dataclass
class _Entry:
    root: Path
    record: dict[str, Any]
    annotations: list[dict[str, Any]]
    dataset: str


def _image_root(json_path: Path, coco: dict[str, Any]) -> Path:
    info = coco.get("info") or {}
    if info.get("image_root"):
        return (json_path.parent / info["image_root"]).resolve()
    images = json_path.parent / "images"
    first = coco["images"][0]["file_name"] if coco["images"] else None
    if images.is_dir() and (first is None or (images / first).is_file()
                            or not (json_path.parent / first).is_file()):
        return images
    return json_path.parent


def coco_files(path: Path, split: str | None) -> list[Path]:
    """The COCO files a path stands for (see the module docstring)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"dataset path not found: {path}")
    if split is not None and (path / f"{split}.coco.json").is_file():
        return [path / f"{split}.coco.json"]
    files = sorted(p / ANNOTATIONS for p in path.iterdir()
                   if p.is_dir() and (p / ANNOTATIONS).is_file())
    if not files:
        if (path / ANNOTATIONS).is_file():
            return [path / ANNOTATIONS]
        raise FileNotFoundError(f"{path} holds no {ANNOTATIONS}, <dataset>/{ANNOTATIONS} or "
                                "<split>.coco.json")
    return files


class CocoDataset:
    """Samples from one or more COCO files or corpus folders (see the module docstring).

    ``datasets``: keep only these dataset names (case and punctuation ignored).
    Annotations are held in memory as RLE; images are decoded on access.
    """

    def __init__(self, path_or_paths: Path | str | Sequence[Path | str],
                 split: str | None = None, datasets: Sequence[str] | None = None) -> None:
        check_split(split)
        paths = [path_or_paths] if isinstance(path_or_paths, (str, Path)) else list(path_or_paths)
        if not paths:
            raise ValueError("no dataset path given")
        wanted = {norm_name(d) for d in datasets} if datasets else None
        self.split = split
        self.entries: list[_Entry] = []
        for p in paths:
            for f in coco_files(Path(p), split):
                self._load(f, split, wanted)
        if not self.entries:
            raise ValueError(f"no images in {[str(p) for p in paths]} for split={split!r}, "
                             f"datasets={list(datasets) if datasets else None}")

    def _load(self, path: Path, split: str | None, wanted: set[str] | None) -> None:
        coco = read_coco(path)
        info = coco.get("info") or {}
        default_ds = info.get("dataset") or path.parent.name
        names = {c["id"]: c["name"] for c in coco["categories"]}
        by_image: dict[int, list[dict[str, Any]]] = {}
        for a in coco["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        root = _image_root(path, coco)
        for im in sorted(coco["images"], key=lambda r: r["id"]):
            ds = im.get("dataset") or default_ds
            if wanted is not None and norm_name(ds) not in wanted:
                continue
            if not split_matches(im.get("split"), split):
                continue
            anns = sorted(by_image.get(im["id"], []), key=lambda a: a["id"])
            for a in anns:
                a.setdefault("structure", names.get(a["category_id"], "object"))
            self.entries.append(_Entry(root, im, anns, ds))

    def __len__(self) -> int:
        return len(self.entries)

    def dataset_of(self, index: int) -> str:
        return self.entries[index].dataset

    def __getitem__(self, index: int) -> Sample:
        e = self.entries[index]
        im = e.record
        path = e.root / im["file_name"]
        image = read_image(path)
        h, w = image.shape[:2]
        if (h, w) != (im["height"], im["width"]):
            raise ValueError(f"{path}: image is {w}x{h}, annotation says "
                             f"{im['width']}x{im['height']}")
        masks = np.zeros((len(e.annotations), h, w), dtype=bool)
        for k, a in enumerate(e.annotations):
            m = decode_rle(a["segmentation"])
            if m.shape != (h, w):
                raise ValueError(f"{path}: annotation {a['id']} mask is {m.shape[::-1]}, "
                                 f"image is {w}x{h}")
            masks[k] = m
        return Sample(image=image, masks=masks,
                      structures=[a["structure"] for a in e.annotations], dataset=e.dataset,
                      image_id=int(im["id"]), file_name=str(im["file_name"]),
                      group=None if im.get("group") is None else str(im["group"]),
                      split=im.get("split"), spacing_mm=spacing_of(im), label=im.get("label"))


def sample_weights(dataset: Any, weights: dict[str, float],
                   default: float | None = None) -> np.ndarray:
    """Per-sample probabilities (N float64, sum 1) giving each dataset a share ∝ its weight.

    Inside a dataset, images are equally likely. ``default``: weight of datasets missing from
    ``weights`` (None: a missing dataset is an error).
    """
    names = [dataset.dataset_of(i) for i in range(len(dataset))]
    counts = Counter(names)
    table = {norm_name(k): float(v) for k, v in weights.items()}
    unknown = sorted(k for k in weights if norm_name(k) not in {norm_name(n) for n in counts})
    if unknown:
        raise ValueError(f"weights name datasets not in the data: {unknown}; "
                         f"present: {sorted(counts)}")
    missing = sorted(n for n in counts if norm_name(n) not in table)
    if missing and default is None:
        raise ValueError(f"no weight for datasets {missing} (pass default=...)")
    per = np.array([table.get(norm_name(n), default or 0.0) / counts[n] for n in names])
    if (per < 0).any() or per.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive total, got {weights}")
    return per / per.sum()


def weighted_sampler(dataset: Any, weights: dict[str, float], num_samples: int | None = None,
                     seed: int = 0, default: float | None = None) -> Any:
    """A seeded ``torch.utils.data.WeightedRandomSampler`` mixing datasets by ``weights``."""
    import torch

    p = sample_weights(dataset, weights, default)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(p, dtype=torch.double), num_samples or len(p), replacement=True,
        generator=generator)
