"""Image and prompt geometry between the original image and the model's input frame.

SAM ("sam"): resize so the longest side equals the model input size (PIL bilinear on the uint8
image, exactly as Meta's ``SamPredictor`` does via torchvision), then the model pads bottom/right.
MedSAM ("medsam"): plain resize of both sides to the square input (aspect ratio not kept).
Points and boxes are scaled per axis with the same factors.
"""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import torch
from PIL import Image

from ..config import Preprocessing


class ResizeLongestSide:
    """Maps images (H x W x 3 uint8), points (... x 2 xy) and boxes (... x 4 XYXY)."""

    def __init__(self, target_length: int, mode: Preprocessing = "sam") -> None:
        if mode not in ("sam", "medsam"):
            raise ValueError(f"unknown preprocessing {mode!r}")
        self.target_length = target_length
        self.mode = mode

    def get_preprocess_shape(self, old_h: int, old_w: int) -> tuple[int, int]:
        """(new_h, new_w) of a resized image, rounding as Meta's reference does."""
        if self.mode == "medsam":
            return self.target_length, self.target_length
        scale = self.target_length * 1.0 / max(old_h, old_w)
        return int(old_h * scale + 0.5), int(old_w * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 -> h x w x 3 uint8 in the model's frame (before padding)."""
        new_h, new_w = self.get_preprocess_shape(image.shape[0], image.shape[1])
        # MedSAM resized with a cubic filter; SAM with bilinear (torchvision's PIL path).
        resample = Image.BICUBIC if self.mode == "medsam" else Image.BILINEAR
        return np.array(Image.fromarray(image).resize((new_w, new_h), resample))

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """Pixel xy in the original image -> xy in the model frame (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w)
        coords = deepcopy(coords).astype(float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """XYXY boxes (... x 4) in the original image -> the model frame."""
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]
                           ) -> torch.Tensor:
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w)
        coords = coords.clone().to(torch.float)
        coords[..., 0] = coords[..., 0] * (new_w / old_w)
        coords[..., 1] = coords[..., 1] * (new_h / old_h)
        return coords

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]
                          ) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
