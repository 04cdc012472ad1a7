"""Overlay pictures: the image with each object's mask tinted, outlined, and its prompts marked."""

from __future__ import annotations

import cv2
import numpy as np

from .prompts import Prompt

_TINT = np.array([255, 64, 32], np.float32)


def overlay(rgb: np.ndarray, masks: np.ndarray | list[np.ndarray],
            prompts: Prompt | list[Prompt]) -> np.ndarray:
    """H x W x 3 uint8 picture of ``rgb`` with each H x W bool mask tinted and outlined, boxes in
    green and points green (foreground) or red (background). One mask/prompt or lists of them."""
    mask_list = [masks] if isinstance(masks, np.ndarray) else list(masks)
    prompt_list = [prompts] if isinstance(prompts, Prompt) else list(prompts)
    out = rgb.astype(np.float32)
    union = np.zeros(rgb.shape[:2], bool)
    for m in mask_list:
        union |= m
    out[union] = 0.55 * out[union] + 0.45 * _TINT
    out = out.clip(0, 255).astype(np.uint8)
    thick = max(1, round(max(rgb.shape[:2]) / 300))
    for m in mask_list:
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 0), thick)
    for prompt in prompt_list:
        if prompt.box is not None:
            x0, y0, x1, y1 = (round(v) for v in prompt.box)
            cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thick)
        for (x, y), lab in zip(prompt.points, prompt.labels):
            colour = (0, 255, 0) if lab == 1 else (255, 0, 0)
            cv2.circle(out, (round(x), round(y)), 2 + 2 * thick, colour, -1)
    return out
