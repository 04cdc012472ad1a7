"""Predictor in bf16 (autocast, or a model cast to bf16): float32 numpy outputs (numpy has no
bf16) within bf16 rounding of the fp32 answer.

Tolerances, for every call: relative logit error (L2 norm of the difference over the fp32
norm) < 0.05, predicted IoU within 0.02, and >= 98 % of pixels on the same side of the mask
threshold. bf16 keeps 8 mantissa bits (~0.4 % per rounding); measured on this model: <= 0.01
relative error and <= 0.002 IoU under autocast, <= 0.02 and >= 99.4 % agreement cast to bf16.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ultrasam import Predictor

BOX = np.array([20, 10, 100, 80])
POINTS, LABELS = np.array([[70, 45], [10, 10]]), np.array([1, 0])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)


def _assert_bf16_close(got: tuple, want: tuple) -> None:
    """(logits at the original size, iou, low-res logits): bf16 result vs fp32 result."""
    logits, iou, low = got
    assert logits.dtype == iou.dtype == low.dtype == np.float32
    assert logits.shape == want[0].shape and low.shape == want[2].shape
    rel = np.linalg.norm(logits - want[0]) / np.linalg.norm(want[0])
    assert rel < 0.05, rel
    assert np.abs(iou - want[1]).max() < 0.02
    assert np.mean((logits > 0) == (want[0] > 0)) >= 0.98


@pytest.mark.parametrize("fast", [True, False])
def test_predict_under_bf16_autocast_is_close_to_fp32(image: np.ndarray, fast: bool,
                                                      make_responsive_sam: Any) -> None:
    predictor = Predictor(make_responsive_sam(), fast=fast)
    predictor.set_image(image)
    calls = [{"point_coords": POINTS[:1], "point_labels": LABELS[:1]},
             {"box": BOX, "refine": True}]
    want = [predictor.predict(**kw, return_logits=True) for kw in calls]
    # The low-res logits of the fp32 point answer as mask prompt: a third call.
    calls.append({**calls[0], "mask_input": want[0][2][:1]})
    want.append(predictor.predict(**calls[2], return_logits=True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [predictor.predict(**kw, return_logits=True) for kw in calls]
        masks, _, _ = predictor.predict(**calls[1])
    for g, w in zip(got, want):
        _assert_bf16_close(g, w)
    assert masks.dtype == bool and np.array_equal(masks, got[1][0] > 0)


def test_model_cast_to_bfloat16_is_close_to_fp32(image: np.ndarray,
                                                make_responsive_sam: Any) -> None:
    """A model converted with ``.to(torch.bfloat16)`` (not autocast) works end to end."""
    ref = Predictor(make_responsive_sam())
    ref.set_image(image)
    half = Predictor(make_responsive_sam().to(torch.bfloat16))
    half.set_image(image)
    assert half.get_image_embedding().dtype == torch.bfloat16
    for kwargs in ({"point_coords": POINTS, "point_labels": LABELS},
                   {"box": BOX, "multimask_output": False},
                   {"box": BOX, "refine": True}):
        _assert_bf16_close(half.predict(**kwargs, return_logits=True),
                           ref.predict(**kwargs, return_logits=True))
    low = ref.predict(box=BOX, multimask_output=False)[2]
    _assert_bf16_close(half.predict(box=BOX, mask_input=low, multimask_output=False,
                                    return_logits=True),
                       ref.predict(box=BOX, mask_input=low, multimask_output=False,
                                   return_logits=True))
