"""A decoded, resized training cache: decode and resize every image once, then train from RAM.

On a 2-core CPU, JPEG decoding, RLE decoding and resizing cost as much as a training step; the
early-fusion recipe therefore converts its training images once into fixed-size arrays
(memory-mapped ``.npy`` files) and samples from them.

Layout of a cache folder (written atomically: a ``.tmp`` folder renamed when complete):

- ``images.npy``: N x S x S x 3 uint8 RGB, the image resized so its longest side is S
  (``resize_longest``), placed at the top-left, zero elsewhere;
- ``sizes.npy``: N x 2 int32, the (h, w) of the valid (unpadded) region;
- ``masks.npy``: M x S x S/8 uint8, each instance's mask bit-packed along rows
  (``np.packbits(..., axis=-1)``);
- ``instances.npy``: M x 2 int32, (image index, structure index);
- ``meta.json``: S, the source files, per-image dataset names and ids, structure names.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import CocoDataset
from .data import resize_longest

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class TrainCache:
    """The arrays of a cache folder (see the module docstring for layouts)."""

    size: int
    images: np.ndarray
    sizes: np.ndarray
    masks: np.ndarray
    instances: np.ndarray
    datasets: list[str]
    image_ids: list[int]
    structures: list[str]

    def mask(self, k: int) -> np.ndarray:
        """Instance ``k`` as an S x S bool array."""
        return np.unpackbits(self.masks[k], axis=-1, count=self.size).astype(bool)


def build_cache(sources: Sequence[str | Path], out: str | Path, size: int,
                split: str | None = None, exclude: Sequence[str] = (),
                min_area: int = 12) -> Path:
    """Decode ``sources`` (COCO files / corpus folders) into a cache at ``out``.

    ``exclude``: ``"DATASET"`` or ``"DATASET:split"`` entries left out (e.g. ``MMOTU_2d:val``).
    ``min_area``: instances with fewer pixels after resizing are not kept (not promptable).
    Returns ``out``. An existing complete cache with the same arguments is reused.
    """
    out = Path(out)
    signature = {"version": CACHE_VERSION, "sources": [str(s) for s in sources],
                 "size": size, "split": split, "exclude": list(exclude), "min_area": min_area}
    meta_path = out / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("signature") == signature:
            return out
        raise ValueError(f"{out} holds a cache built with other arguments; remove it or pick "
                         f"another folder")
    ds = CocoDataset([Path(s) for s in sources], split=split)
    rules = [(e.split(":", 1) + [None])[:2] for e in exclude]
    keep = [i for i in range(len(ds))
            if not any(ds.entries[i].dataset == name and (sp is None or
                                                          ds.entries[i].record.get("split") == sp)
                       for name, sp in rules)]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8,
                                       (len(keep), size, size, 3))
    sizes = np.zeros((len(keep), 2), np.int32)
    packed: list[np.ndarray] = []
    instances: list[tuple[int, int]] = []
    structures: list[str] = []
    datasets, image_ids = [], []
    for n, i in enumerate(keep):
        sample = ds[i]
        img, masks = resize_longest(sample.image, sample.masks, size)
        h, w = img.shape[:2]
        images[n, :h, :w] = img if img.shape[2] == 3 else np.repeat(img, 3, axis=2)
        sizes[n] = (h, w)
        datasets.append(sample.dataset)
        image_ids.append(sample.image_id)
        for m, name in zip(masks, sample.structures):
            if int(m.sum()) < min_area:
                continue
            full = np.zeros((size, size), bool)
            full[:h, :w] = m
            packed.append(np.packbits(full, axis=-1))
            if name not in structures:
                structures.append(name)
            instances.append((n, structures.index(name)))
        if (n + 1) % 1000 == 0:
            log.info("cache: %d / %d images", n + 1, len(keep))
    images.flush()
    del images
    np.save(tmp / "sizes.npy", sizes)
    np.save(tmp / "masks.npy", np.stack(packed) if packed
            else np.zeros((0, size, size // 8), np.uint8))
    np.save(tmp / "instances.npy", np.asarray(instances, np.int32).reshape(-1, 2))
    meta: dict[str, Any] = {"signature": signature, "size": size, "datasets": datasets,
                            "image_ids": image_ids, "structures": structures}
    (tmp / "meta.json").write_text(json.dumps(meta))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("cache: %d images, %d instances -> %s", len(keep), len(instances), out)
    return out


def load_cache(folder: str | Path) -> TrainCache:
    """Open a cache folder (arrays memory-mapped read-only)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    return TrainCache(size=int(meta["size"]),
                      images=np.load(folder / "images.npy", mmap_mode="r"),
                      sizes=np.load(folder / "sizes.npy"),
                      masks=np.load(folder / "masks.npy", mmap_mode="r"),
                      instances=np.load(folder / "instances.npy"),
                      datasets=list(meta["datasets"]), image_ids=list(meta["image_ids"]),
                      structures=list(meta["structures"]))
