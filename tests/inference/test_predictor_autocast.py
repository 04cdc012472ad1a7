"""Predictor under bf16 autocast (review finding): numpy has no bf16, outputs must be float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ultrasam import Predictor
from ultrasam.modeling import build_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = build_model("tiny").eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


@pytest.mark.parametrize("fast", [True, False])
def test_predict_under_bf16_autocast_returns_float32(model: torch.nn.Module, fast: bool) -> None:
    image = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    predictor = Predictor(model, fast=fast)
    predictor.set_image(image)
    pts, lab = np.array([[70, 45]]), np.array([1])
    ref_logits, ref_iou, ref_low = predictor.predict(pts, lab, return_logits=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, iou, low = predictor.predict(pts, lab, return_logits=True)
        masks, _, _ = predictor.predict(pts, lab, mask_input=ref_low[:1])
        refined, riou, rlow = predictor.predict(box=np.array([20, 10, 100, 80]), refine=True)
    assert logits.dtype == iou.dtype == low.dtype == riou.dtype == rlow.dtype == np.float32
    assert masks.dtype == refined.dtype == bool and refined.shape == (1, 90, 140)
    # bf16 rounding only: close to the fp32 result.
    assert np.abs(iou - ref_iou).max() < 0.05
    assert np.mean((logits > 0) == (ref_logits > 0)) > 0.95


def test_model_cast_to_bfloat16_predicts() -> None:
    """A model converted with ``.to(torch.bfloat16)`` (not autocast) works end to end."""
    import numpy as np
    import torch

    from ultrasam import Predictor
    from ultrasam.modeling import build_model

    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    image = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    ref = Predictor(model)
    ref.set_image(image)
    half = Predictor(build_model("tiny").eval())
    half.model.load_state_dict(model.state_dict())
    half.model.to(torch.bfloat16)
    half.set_image(image)
    for kwargs in ({"point_coords": np.array([[70, 45], [10, 10]]),
                    "point_labels": np.array([1, 0])},
                   {"box": np.array([20, 10, 100, 80]), "multimask_output": False},
                   {"box": np.array([20, 10, 100, 80]), "refine": True}):
        a = ref.predict(**kwargs)
        b = half.predict(**kwargs)
        assert b[1].dtype == np.float32 and b[2].dtype == np.float32
        assert b[0].shape == a[0].shape
        assert np.abs(b[2] - a[2]).max() <= 0.1 * np.abs(a[2]).max() + 0.1
    low = ref.predict(box=np.array([20, 10, 100, 80]), multimask_output=False)[2]
    out = half.predict(box=np.array([20, 10, 100, 80]), mask_input=low, multimask_output=False)
    assert out[2].shape == (1, 32, 32)
