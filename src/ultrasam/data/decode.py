"""Decoding dataset images to the H x W x 3 uint8 RGB every sample holds (OpenCV)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def to_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """H x W x 3 uint8 RGB from an OpenCV-decoded array (gray, BGR or BGRA, 8 or 16 bit)."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: unsupported image dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise ValueError(f"{name}: unsupported image shape {image.shape}")


def read_image(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB; ``FileNotFoundError``/``ValueError`` naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ValueError(f"unreadable image: {path}")
    return to_rgb(image, str(path))
