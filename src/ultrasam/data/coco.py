"""COCO writing and reading shared by every source converter.

A converter hands the writer one image and, per structure, one boolean mask or a list of them
(one per separate annotation: a lesion's own mask file, one polygon); the writer splits each mask
into connected components (8-connectivity, one COCO instance each) — separate annotations stay
separate instances even where they touch or nest — encodes them
as compressed RLE with a string ``counts`` (pycocotools format), assigns sequential integer ids
and, when an output folder is given, writes the image as a lossless PNG straight away so that
memory stays bounded whatever the size of the dataset.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .json_file import read_json_file

log = logging.getLogger(__name__)

SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "testing": "test"}


def normalise_split(value: str | None) -> str | None:
    """Map an official split name ("validation", "Training", ...) to train/val/test."""
    if value is None:
        return None
    key = str(value).strip().lower()
    if key not in SPLIT_NAMES:
        raise ValueError(f"unknown split name {value!r}; expected one of {sorted(SPLIT_NAMES)}")
    return SPLIT_NAMES[key]


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of an H x W boolean mask, with ``counts`` decoded to ASCII for JSON."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """H x W bool mask from a compressed (string or bytes counts) or uncompressed RLE."""
    if isinstance(rle.get("counts"), list):
        h, w = rle["size"]
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle.get("counts"), str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """Split an H x W boolean mask into its 8-connected components, in label order."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, n)]


@dataclass
class ConversionWarning:
    """A problem met while converting: the file it concerns and what was done about it."""

    file: str
    message: str

    @property
    def skipped(self) -> bool:
        """Whether an input item (file, pair, row, shape) was left out: by the converters'
        convention every such warning says "skipped"."""
        return "skipped" in self.message

    def as_dict(self) -> dict[str, str]:
        return {"file": self.file, "message": self.message}


@dataclass
class CocoWriter:
    """Collects one dataset's images and instances as COCO.

    ``images_dir``: where PNGs are written (None: annotations only, e.g. in tests).
    ``structures``: the category names, in id order (ids start at 1).
    """

    dataset: str
    structures: list[str]
    images_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[ConversionWarning] = field(default_factory=list)
    #: instances a converter removed by a source-specific rule: {(rule, structure): count}.
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._category_ids = {name: i + 1 for i, name in enumerate(self.structures)}
        if self.images_dir is not None:
            self.images_dir = Path(self.images_dir)
            self.images_dir.mkdir(parents=True, exist_ok=True)

    def warn(self, file: str | Path, message: str) -> None:
        """Record (and log) a skipped or repaired input, naming the file."""
        w = ConversionWarning(str(file), message)
        self.warnings.append(w)
        log.warning("%s: %s: %s", self.dataset, w.file, w.message)

    def drop(self, rule: str, structure: str, n: int = 1) -> None:
        """Count ``n`` components of ``structure`` removed by the converter's ``rule`` (e.g.
        burnt-in text in masks); the manifest's filter report includes them."""
        if n > 0:
            self.dropped[(rule, structure)] += n

    @property
    def skipped(self) -> int:
        """Number of input items left out with a warning (see :attr:`ConversionWarning.skipped`)."""
        return sum(w.skipped for w in self.warnings)

    def add_image(
        self,
        image: np.ndarray,
        masks: dict[str, np.ndarray | Sequence[np.ndarray]],
        *,
        source: str,
        group: str | None = None,
        split: str | None = None,
        label: str | None = None,
        frame: int | None = None,
        slice_index: int | None = None,
        spacing_mm: tuple[float, float] | None = None,
        name_parts: tuple[str, ...] = (),
        extra: dict[str, Any] | None = None,
    ) -> int:
        """Add one image (H x W or H x W x 3 uint8) and its structure masks (H x W bool each).

        A structure's value may be a list of masks, one per separate annotation (file, polygon,
        shape): each is split into components on its own, so touching or nested lesions drawn
        separately stay separate instances.

        Returns the new image id. Raises ``ValueError`` for unknown structures or masks whose
        size differs from the image (the converter decides whether to warn and skip).
        """
        if image.ndim not in (2, 3) or image.dtype != np.uint8:
            raise ValueError(f"image must be HxW or HxWx3 uint8, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        parts = {name: [m] if isinstance(m, np.ndarray) else list(m) for name, m in masks.items()}
        for name, ms in parts.items():
            if name not in self._category_ids:
                raise ValueError(f"unknown structure {name!r} for {self.dataset}")
            for m in ms:
                if m.shape != (h, w):
                    raise ValueError(f"mask {name!r} is {m.shape}, image is {(h, w)}")
        image_id = len(self.images) + 1
        stem = "__".join((self.dataset, *[p for p in name_parts if p], f"{image_id:05d}"))
        file_name = f"{stem}.png"
        if self.images_dir is not None:
            self._write_png(self.images_dir / file_name, image)
        record: dict[str, Any] = {
            "id": image_id, "file_name": file_name, "width": w, "height": h,
            "source": source, "group": group, "split": normalise_split(split), "label": label,
            "dataset": self.dataset,
        }
        if frame is not None:
            record["frame"] = int(frame)
        if slice_index is not None:
            record["slice"] = int(slice_index)
        if spacing_mm is not None:
            record["pixel_spacing_mm"] = [float(spacing_mm[0]), float(spacing_mm[1])]
        if extra:
            record.update(extra)
        self.images.append(record)
        for name, ms in parts.items():
            for m in ms:
                for component in connected_components(m):
                    self._add_instance(image_id, name, component)
        return image_id

    def _add_instance(self, image_id: int, structure: str, mask: np.ndarray) -> None:
        rle = encode_rle(mask)
        bbox = [float(v) for v in mask_utils.toBbox({**rle, "counts": rle["counts"].encode()})]
        self.annotations.append({
            "id": len(self.annotations) + 1, "image_id": image_id,
            "category_id": self._category_ids[structure], "structure": structure,
            "segmentation": rle, "area": int(mask.sum()), "bbox": bbox, "iscrowd": 0,
        })

    @staticmethod
    def _write_png(path: Path, image: np.ndarray) -> None:
        # OpenCV expects BGR; compression level is fixed so output bytes are reproducible.
        data = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".png", data, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        if not ok:
            raise OSError(f"could not encode {path.name}")
        path.write_bytes(buf.tobytes())

    def to_coco(self) -> dict[str, Any]:
        """The dataset as a COCO dict (categories in ``structures`` order)."""
        return {
            "info": {"dataset": self.dataset, **self.info},
            "images": self.images,
            "annotations": self.annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"}
                           for n, i in self._category_ids.items()],
            "warnings": [w.as_dict() for w in self.warnings],
        }

    def counts(self) -> dict[str, int]:
        """Instances per structure (every structure listed, zeros included)."""
        out = dict.fromkeys(self.structures, 0)
        for a in self.annotations:
            out[a["structure"]] += 1
        return out


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys, no timestamps), written atomically."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_coco(path: Path) -> dict[str, Any]:
    """Load a COCO JSON file with a clear error for missing or malformed files."""
    path = Path(path)
    data = read_json_file(path, f"COCO file not found: {path}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path} is not a COCO file: no {key!r} list")
    return data
