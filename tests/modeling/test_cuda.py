"""The model on a CUDA device: the same function as on the CPU, and bf16 autocast close to fp32.

Marked ``gpu``: deselected by the default run (pyproject's ``addopts``); run with
``python -m pytest -m gpu``. Skipped where no CUDA device is visible.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from ultrasam.inference.predictor import Predictor
from ultrasam.modeling.sam import Sam

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]

DEVICE = "cuda"


@pytest.fixture(autouse=True)
def _no_tf32() -> Iterator[None]:
    # TF32 matrix products round to 10 mantissa bits: the parity test compares true fp32.
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 128-px images (B x 3 x S x S) and three boxes (P x 4, model frame) on them."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 128, 128, generator=g)
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0],
                          [5.0, 5.0, 60.0, 50.0]])
    return x, boxes, torch.tensor([0, 1, 1])


def test_forward_on_cuda_matches_cpu(make_responsive_sam: Any) -> None:
    model = make_responsive_sam()
    assert isinstance(model, Sam)
    x, boxes, index = _inputs()
    with torch.no_grad():
        want_logits, want_iou = model(x, boxes=boxes, multimask_output=True, image_index=index)
        model.to(DEVICE)
        logits, iou = model(x.to(DEVICE), boxes=boxes.to(DEVICE), multimask_output=True,
                            image_index=index.to(DEVICE))
    assert logits.device.type == DEVICE and logits.shape == want_logits.shape == (3, 3, 32, 32)
    # fp32 on both (TF32 off): float rounding only. The logits are ~0.2 in size; a change
    # of 1e-3 in one encoder bias moves them by ~3e-4, well above these tolerances.
    torch.testing.assert_close(logits.cpu(), want_logits, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(iou.cpu(), want_iou, rtol=1e-4, atol=2e-5)


def test_predictor_under_bf16_autocast_on_cuda_is_close_to_fp32(
        make_responsive_sam: Any) -> None:
    image = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    cpu = Predictor(make_responsive_sam())
    cpu.set_image(image)
    gpu = Predictor(make_responsive_sam().to(DEVICE))
    gpu.set_image(image)
    box = np.array([20, 10, 100, 80])
    ref_logits, ref_iou, _ = cpu.predict(box=box, return_logits=True)
    fp32_logits, fp32_iou, _ = gpu.predict(box=box, return_logits=True)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        gpu.set_image(image)
        logits, iou, low = gpu.predict(box=box, return_logits=True)
    # fp32 on the device: the CPU's result up to float rounding.
    np.testing.assert_allclose(fp32_logits, ref_logits, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(fp32_iou, ref_iou, rtol=1e-4, atol=2e-5)
    # bf16 (8 mantissa bits): numpy-ready float32 outputs, within bf16 rounding of fp32.
    assert logits.dtype == iou.dtype == low.dtype == np.float32
    rel = np.linalg.norm(logits - ref_logits) / np.linalg.norm(ref_logits)
    assert rel < 0.05, rel
    assert np.abs(iou - ref_iou).max() < 0.05
    assert np.mean((logits > 0) == (ref_logits > 0)) > 0.95
