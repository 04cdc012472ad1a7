"""Uploaded images, their decoded frames and embeddings (one bounded LRU), and mask records.

Files live in one private temporary folder, named by the server (``<image_id><suffix>``); no
name or path from the client ever reaches the filesystem. Image ids and mask ids are random
(``secrets.token_urlsafe``), so they cannot be guessed. Memory is bounded three ways: the frame
LRU by bytes (``cache_mb``), the number of images (``max_images``, least recently used
dropped) and the mask records per image (``max_masks_per_image``, oldest dropped).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .lru import ByteLRU
from .measure import Measurement
from .probe import Probe
from .settings import ServeSettings

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_id(nbytes: int = 16) -> str:
    """A random URL-safe id (``nbytes`` of entropy: 128 bits by default)."""
    return secrets.token_urlsafe(nbytes)


class NotFound(KeyError):
    """An image or mask id this server does not hold (never held, deleted or evicted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


@dataclass
class Frame:
    """One decoded frame and, once a prompt arrived, its embedding (an ``ImageState`` of
    :mod:`ultrasam.inference.predictor`: features, sizes, the decoder's per-image cache).

    rgb: H x W x 3 uint8. spacing_mm: (row_mm, col_mm) or None. calibration: the DICOM
    :class:`ultrasam.io.dicom.Calibration` (per-mask region rule) or None.
    """

    rgb: np.ndarray
    spacing_mm: tuple[float, float] | None
    calibration: Any | None
    warnings: tuple[str, ...]
    state: Any | None = None
    png: bytes | None = None

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def state_nbytes(obj: Any, _seen: set[int] | None = None, _depth: int = 0) -> int:
    """Bytes of the arrays, tensors and buffers an object holds (the shared model excluded).

    Used to charge a frame (its pixels, PNG, embedding and the decoder's per-image cache) to
    the LRU; walks attributes, dataclass fields and containers a few levels deep.
    """
    seen = _seen if _seen is not None else set()
    if id(obj) in seen or obj is None or isinstance(obj, (nn.Module, str, int, float, bool)):
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if _depth >= 4:
        return 0
    if isinstance(obj, dict):
        values: Any = obj.values()
    elif isinstance(obj, (list, tuple, set)):
        values = obj
    elif hasattr(obj, "__dict__"):
        values = vars(obj).values()
    else:
        return 0
    return sum(state_nbytes(v, seen, _depth + 1) for v in values)


@dataclass(frozen=True)
class MaskRecord:
    """A mask the server answered with: RLE in image pixels of (axis, frame)."""

    mask_id: str
    axis: int
    frame: int
    rle: dict[str, Any]
    score: float
    measurement: Measurement


@dataclass
class StoredImage:
    """One uploaded file. ``name`` is the client's file name for display only (sanitised)."""

    image_id: str
    name: str
    path: Path
    probe: Probe
    default_frame: int
    spacing_mm: tuple[float, float] | None
    calibration: str  # "calibrated", "regions" (per-mask DICOM regions) or "uncalibrated"
    warnings: tuple[str, ...]
    masks: OrderedDict[str, MaskRecord] = field(default_factory=OrderedDict)
    last_used: float = field(default_factory=time.monotonic)


def display_name(name: str | None) -> str:
    """The client's file name reduced to a harmless label (never used as a path)."""
    base = re.split(r"[\\/]", name or "")[-1]
    clean = re.sub(r"[^\w .()+-]", "_", base).strip()[:120]
    return clean or "upload"


def load_frame(image: StoredImage, axis: int, index: int) -> Frame:
    """Decode one frame (2-D files: ``axis`` 0, ``index`` the frame or page) or one slice of a
    volume along ITK ``axis``. Raises ValueError for a corrupt frame."""
    from ultrasam.io import load_image

    if image.probe.kind == "volume" or image.probe.format in ("NIFTI", "METAIMAGE"):
        loaded = load_image(image.path, slice=index, axis=axis)
    else:
        loaded = load_image(image.path, frame=index if image.probe.axes[0].frames > 1 else None)
    return Frame(rgb=loaded.rgb, spacing_mm=loaded.spacing_mm,
                 calibration=loaded.meta.get("calibration"), warnings=tuple(loaded.warnings))


def calibration_status(frame: Frame) -> str:
    if frame.spacing_mm is not None:
        return "calibrated"
    if frame.calibration is not None and getattr(frame.calibration, "regions", ()):
        return "regions"
    return "uncalibrated"


class ImageStore:
    """Thread-safe registry of uploads, frames (LRU by bytes) and masks."""

    def __init__(self, root: Path, settings: ServeSettings) -> None:
        self.root = root
        self.settings = settings
        self._images: dict[str, StoredImage] = {}
        self._lock = threading.Lock()
        self.frames: ByteLRU[tuple[str, int, int], Frame] = ByteLRU(
            settings.cache_bytes, state_nbytes)

    # ------------------------------------------------------------------------- images
    def reserve(self) -> tuple[str, Path]:
        """A fresh image id and the server-chosen path its upload is written to."""
        image_id = new_id()
        return image_id, self.root / f"{image_id}.upload"

    def add(self, image: StoredImage, first: Frame) -> None:
        """Register an image with its already decoded default frame; drops the least recently
        used images beyond ``max_images``."""
        with self._lock:
            self._images[image.image_id] = image
            doomed = sorted(self._images.values(), key=lambda im: im.last_used)
            doomed = doomed[: max(0, len(self._images) - self.settings.max_images)]
        for old in doomed:
            self.delete(old.image_id)
        self.frames.put((image.image_id, 0, image.default_frame), first)

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            image = self._images.get(image_id) if ID_PATTERN.match(image_id) else None
            if image is None:
                raise NotFound(f"no image {image_id!r} on this server (deleted, evicted, or "
                               "never uploaded)")
            image.last_used = time.monotonic()
            return image

    def delete(self, image_id: str) -> None:
        with self._lock:
            image = self._images.pop(image_id, None)
        if image is None:
            raise NotFound(f"no image {image_id!r} on this server")
        self.frames.discard(lambda key: key[0] == image_id)
        image.path.unlink(missing_ok=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    # ------------------------------------------------------------------------- frames
    def check_frame(self, image: StoredImage, axis: int, index: int) -> None:
        """ValueError naming the valid range when (axis, index) does not exist."""
        axes = image.probe.axes
        if not 0 <= axis < len(axes):
            raise ValueError(f"axis {axis} does not exist: this {image.probe.kind} has "
                             f"axis 0{'..2' if len(axes) == 3 else ' only'}")
        n = axes[axis].frames
        if not 0 <= index < n:
            raise ValueError(f"frame {index} is out of range: valid frames are 0..{n - 1}"
                             + (f" along axis {axis}" if len(axes) == 3 else ""))

    def frame(self, image: StoredImage, axis: int, index: int) -> Frame:
        """The decoded frame, from the LRU or decoded now (blocking: call from a thread)."""
        self.check_frame(image, axis, index)
        key = (image.image_id, axis, index)
        frame = self.frames.get(key)
        if frame is None:
            frame = load_frame(image, axis, index)
            self.frames.put(key, frame)
        return frame

    def charge(self, image: StoredImage, axis: int, index: int) -> None:
        """Re-count a frame's bytes after an embedding or PNG was attached to it."""
        self.frames.resize((image.image_id, axis, index))

    # -------------------------------------------------------------------------- masks
    def add_mask(self, image: StoredImage, record: MaskRecord) -> None:
        with self._lock:
            image.masks[record.mask_id] = record
            while len(image.masks) > self.settings.max_masks_per_image:
                image.masks.popitem(last=False)

    def mask(self, image: StoredImage, mask_id: str) -> MaskRecord:
        with self._lock:
            record = image.masks.get(mask_id)
        if record is None:
            raise NotFound(f"no mask {mask_id!r} for image {image.image_id!r} (unknown, or "
                           f"dropped after {self.settings.max_masks_per_image} newer masks)")
        return record
