"""Labelled images for downstream tasks: a COCO corpus or a folder-per-class tree.

Sources:

- **COCO** (a dataset's ``annotations.coco.json``, a merged file or a corpus folder, read by
  :class:`ultrasam.data.dataset.CocoDataset`): the image-level class is the image record's
  ``label_field`` (default ``label``); the instances are the segmentation targets, one
  foreground class per structure name. ``split`` comes from the image record, the group from
  its ``split_group`` (a corpus split's unit: groups joined with near-duplicates) or ``group``.
- **Folder per class**: ``ROOT/<class>/<image>`` or ``ROOT/<split>/<class>/<image>`` with
  ``<split>`` one of train / val / test (an official split). No groups are known there, so
  every image is its own group.

Everything is turned into :class:`Record` (what the splitter and the label counts need) and
read lazily with :meth:`ImageSource.read`; :func:`load_tensors` resizes the chosen images to
the encoder's input once (longest side = S, zero padding bottom/right) and keeps them as
uint8 tensors, the cheapest form to hold a few thousand images in memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import CocoDataset, read_image
from ..inference.transforms import ResizeLongestSide

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FOLDER_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    """One image as the splitter sees it (``index`` into its :class:`ImageSource`)."""

    index: int
    dataset: str
    image_id: int
    group: str | None
    split: str | None
    label: str | None
    source: str | None = None
    structures: tuple[str, ...] = ()  # annotated structure names (COCO), for subsets


@dataclass
class ImageData:
    """One decoded image: H x W x 3 uint8 RGB, its structures' masks N x H x W bool and names,
    (row, col) pixel spacing in mm when known."""

    image: np.ndarray
    masks: np.ndarray
    structures: list[str]
    spacing_mm: tuple[float, float] | None


class ImageSource:
    """Records plus a reader; built by :func:`open_source`. ``cache_key`` names the reader
    (shared by :meth:`subset` views), so a :class:`~.cache.RunCache` can reuse its images."""

    def __init__(self, records: list[Record], reader: Any, description: str,
                 structures: Sequence[str] = (), kind: str = "coco",
                 cache_key: str | None = None) -> None:
        self.records = records
        self._reader = reader
        self.description = description
        self.structures = sorted(structures)  # segmentation classes the data holds
        self.kind = kind  # "coco" or "folder"
        self.cache_key = cache_key or uuid.uuid4().hex

    def subset(self, datasets: Sequence[str]) -> ImageSource:
        """A view holding only ``datasets``' records, sharing this reader (a merged corpus
        file is parsed once and used for several tasks)."""
        keep = set(datasets)
        records = [r for r in self.records if r.dataset in keep]
        if not records:
            present = sorted({r.dataset for r in self.records})
            raise ValueError(f"{self.description}: no images of {sorted(keep)}; present: "
                             f"{present}")
        names = {s for r in records for s in r.structures}
        return ImageSource(records, self._reader,
                           f"{self.description} [{', '.join(sorted(keep))}]", sorted(names),
                           self.kind, self.cache_key)

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int) -> ImageData:
        return self._reader(index)


def _coco_source(paths: list[Path], datasets: Sequence[str] | None,
                 label_field: str) -> ImageSource:
    ds = CocoDataset(paths, split=None, datasets=datasets)
    records = []
    for i, e in enumerate(ds.entries):
        im = e.record
        label = im.get(label_field)
        # A corpus split's own unit key (groups joined with near-duplicates) when present.
        group = im.get("split_group") or im.get("group")
        records.append(Record(index=i, dataset=e.dataset, image_id=int(im["id"]),
                              group=None if group in (None, "") else str(group),
                              split=im.get("split"),
                              label=None if label is None else str(label),
                              source=im.get("source") or im.get("file_name"),
                              structures=tuple(sorted({a["structure"]
                                                       for a in e.annotations}))))

    def read(i: int) -> ImageData:
        s = ds[i]
        return ImageData(s.image, s.masks, list(s.structures), s.spacing_mm)

    names = {a["structure"] for e in ds.entries for a in e.annotations}
    where = ", ".join(str(p) for p in paths)
    return ImageSource(records, read, f"COCO {where}", sorted(names), "coco")


def _folder_files(root: Path) -> list[tuple[Path, str, str | None]]:
    """(file, class, official split or None) for ROOT/<class>/* or ROOT/<split>/<class>/*."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    split_dirs = [p for p in subdirs if p.name in FOLDER_SPLITS]
    if split_dirs and len(split_dirs) != len(subdirs):
        raise ValueError(f"{root}: mixes split folders {[p.name for p in split_dirs]} with "
                         f"class folders; use ROOT/<class>/ or ROOT/<split>/<class>/")
    tops: list[tuple[Path, str | None]] = [(p, p.name) for p in split_dirs] or [(root, None)]
    files = []
    for top, split in tops:
        for cls_dir in sorted(p for p in top.iterdir() if p.is_dir()):
            for f in sorted(cls_dir.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append((f, cls_dir.name, split))
    if not files:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in class folders")
    return files


def _folder_source(root: Path) -> ImageSource:
    files = _folder_files(root)
    records = [Record(index=i, dataset=root.name, image_id=i, group=None, split=split,
                      label=cls, source=str(f.relative_to(root)))
               for i, (f, cls, split) in enumerate(files)]

    def read(i: int) -> ImageData:
        image = read_image(files[i][0])
        return ImageData(image, np.zeros((0, *image.shape[:2]), bool), [], None)

    return ImageSource(records, read, f"folder {root}", (), "folder")


def is_coco(path: Path) -> bool:
    """A COCO file, a dataset folder with ``annotations.coco.json`` or a corpus folder."""
    if path.is_file():
        return path.suffix == ".json"
    return (path / "annotations.coco.json").is_file() or any(
        (p / "annotations.coco.json").is_file() for p in path.iterdir() if p.is_dir())


def open_source(path: str | Path | Sequence[str | Path], datasets: Sequence[str] | None = None,
                label_field: str = "label") -> ImageSource:
    """A COCO corpus (see the module docstring; several COCO files, e.g. a corpus split's
    train / val / test files, are read as one) or a folder-per-class tree."""
    paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(p) for p in path]
    missing = [str(p) for p in paths if not p.exists()]
    if missing or not paths:
        raise FileNotFoundError(f"data not found: {missing or 'no path given'}")
    if len(paths) > 1 or is_coco(paths[0]):
        return _coco_source(paths, datasets, label_field)
    p = paths[0]
    if datasets:
        raise ValueError("datasets= selects datasets of a COCO corpus, not of a class folder")
    return _folder_source(p)


@dataclass
class Tensors:
    """Images resized into the S x S input frame.

    ``images``: N x 3 x S x S uint8 (zero padding bottom/right); ``sizes``: N x 2 (h, w) of
    the resized image inside the frame; ``targets``: N x S x S uint8 label maps (0 background,
    k the k-th structure of ``structures``) for segmentation, else None.
    """

    images: torch.Tensor
    sizes: torch.Tensor
    targets: torch.Tensor | None = None

    def valid(self) -> torch.Tensor:
        """N x S x S bool: the pixels that hold the image (not padding)."""
        s = self.images.shape[-1]
        rows = torch.arange(s).view(1, s, 1) < self.sizes[:, 0].view(-1, 1, 1)
        cols = torch.arange(s).view(1, 1, s) < self.sizes[:, 1].view(-1, 1, 1)
        return rows & cols


def label_map(masks: np.ndarray, structures: Sequence[str],
              classes: Sequence[str]) -> np.ndarray:
    """N x H x W instance masks -> H x W uint8 map: k for ``classes[k - 1]``, 0 background.

    Structures not in ``classes`` are background; where structures overlap the later class
    in ``classes`` wins (a fixed, documented rule).
    """
    out = np.zeros(masks.shape[1:], np.uint8)
    for k, name in enumerate(classes, start=1):
        for m, s in zip(masks, structures):
            if s == name:
                out[m] = k
    return out


def load_tensors(source: ImageSource, indices: Sequence[int], size: int,
                 classes: Sequence[str] | None = None) -> Tensors:
    """Read and resize ``indices`` of ``source`` (longest side -> ``size``; bilinear for the
    image, nearest for the label map built from ``classes`` when given)."""
    import cv2

    if len(classes or ()) > 254:
        raise ValueError(f"at most 254 segmentation classes, got {len(classes or ())}")
    resize = ResizeLongestSide(size)
    n = len(indices)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    sizes = torch.zeros(n, 2, dtype=torch.long)
    targets = torch.zeros(n, size, size, dtype=torch.uint8) if classes is not None else None
    for row, i in enumerate(indices):
        data = source.read(i)
        im = resize.apply_image(data.image)
        h, w = im.shape[:2]
        images[row, :, :h, :w] = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))
        sizes[row] = torch.tensor([h, w])
        if targets is not None and classes is not None:
            lab = label_map(data.masks, data.structures, classes)
            lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
            targets[row, :h, :w] = torch.from_numpy(lab)
    return Tensors(images, sizes, targets)
