"""Image and prompt geometry for the ONNX runtime, in numpy, driven by ``preprocess.json``.

The same arithmetic as ``ultrasam.inference.transforms.ResizeLongestSide`` and
``PromptableModel.preprocess`` (which import torch and so cannot be used here): SAM resizes the
longest side to S (each side rounded as Meta does), MedSAM both sides; the uint8 RGB image is
resized with Pillow, normalised in float32 and padded with zeros at the bottom / right.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

_RESIZES = ("longest_side", "square")
_INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
_MAX_INPUT = 16384  # no real model is larger; bounds memory on a hostile preprocess.json


@dataclass(frozen=True)
class Preprocess:
    """``preprocess.json`` parsed and checked (see ``ultrasam.export.preprocess``)."""

    input_size: int
    resize: str
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mask_threshold: float

    @classmethod
    def from_dict(cls, d: Any, source: str = "preprocess.json") -> Preprocess:
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object")  # noqa: TRY004 - file content
        missing = [k for k in ("input_size", "resize", "interpolation", "mean", "std")
                   if k not in d]
        if missing:
            raise ValueError(f"{source}: missing keys {missing}")
        size = d["input_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_INPUT:
            raise ValueError(f"{source}: input_size must be an integer in [1, {_MAX_INPUT}], "
                             f"got {size!r}")
        if d["resize"] not in _RESIZES:
            raise ValueError(f"{source}: resize must be one of {list(_RESIZES)}, got "
                             f"{d['resize']!r}")
        if d["interpolation"] not in _INTERPOLATIONS:
            raise ValueError(f"{source}: interpolation must be one of "
                             f"{sorted(_INTERPOLATIONS)}, got {d['interpolation']!r}")
        for key in ("pad", "channels"):
            expected = {"pad": "bottom_right", "channels": "RGB"}[key]
            if d.get(key, expected) != expected:
                raise ValueError(f"{source}: only {key}={expected!r} is supported, got "
                                 f"{d[key]!r}")
        mean, std = _triple(d["mean"], "mean", source), _triple(d["std"], "std", source)
        if min(std) <= 0:
            raise ValueError(f"{source}: std must be positive, got {list(std)}")
        threshold = d.get("mask_threshold", 0.0)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not np.isfinite(threshold):
            raise ValueError(f"{source}: mask_threshold must be a finite number")
        return cls(size, d["resize"], d["interpolation"], mean, std, float(threshold))

    @classmethod
    def read(cls, path: Path) -> Preprocess:
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"cannot read {path}: {e}") from e
        return cls.from_dict(data, str(path))

    # ------------------------------------------------------------------------- images
    def resized_shape(self, h: int, w: int) -> tuple[int, int]:
        """(new_h, new_w) of the resized image (before padding)."""
        if self.resize == "square":
            return self.input_size, self.input_size
        scale = self.input_size * 1.0 / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def image_input(self, rgb: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 RGB -> the encoder's ``image``, 1 x 3 x S x S float32."""
        new_h, new_w = self.resized_shape(rgb.shape[0], rgb.shape[1])
        resized = np.asarray(Image.fromarray(rgb).resize(
            (new_w, new_h), _INTERPOLATIONS[self.interpolation]))
        x = resized.astype(np.float32).transpose(2, 0, 1)
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        x = (x - mean) / std
        s = self.input_size
        out = np.zeros((1, 3, s, s), np.float32)
        out[0, :, :new_h, :new_w] = x
        return out

    # ------------------------------------------------------------------------ prompts
    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Pixel xy (... x 2) in the original image -> xy in the model frame (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.resized_shape(old_h, old_w)
        out = np.array(coords, dtype=float, copy=True)
        out[..., 0] = out[..., 0] * (new_w / old_w)
        out[..., 1] = out[..., 1] * (new_h / old_h)
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """XYXY boxes (... x 4) in the original image -> the model frame, N x 4."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)


def _triple(value: Any, name: str, source: str) -> tuple[float, float, float]:
    ok = isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
        for v in value)
    if not ok:
        raise ValueError(f"{source}: {name} must be a list of three finite numbers")
    return (float(value[0]), float(value[1]), float(value[2]))


def box_from_logits(logits: np.ndarray, input_size: tuple[int, int]
                    ) -> np.ndarray | None:
    """Box (x1, y1, x2, y2), x2 = last foreground column + 1, of the logits > 0 inside the
    valid (unpadded) ``input_size`` region of an S x S logit map; None when empty.

    The numpy twin of ``ultrasam.inference.refine.boxes_from_logits`` for one prompt; ``logits`` are
    already upsampled to the model frame (the decoder graph does that).
    """
    h, w = input_size
    fg = logits[:h, :w] > 0
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float64)
