"""ViT-B (SAM's architecture, with UltraSam's doubled residual) exported: slow, so marked."""

from __future__ import annotations

import numpy as np
import pytest

from ultrasam.data.synthetic import make_phantom
from ultrasam.inference.onnx import OnnxPredictor
from ultrasam.inference.predictor import Predictor

from .conftest import seeded_model


@pytest.mark.slow
def test_vit_b_parity(tmp_path) -> None:
    from ultrasam.export.onnx_export import export_onnx

    model = seeded_model("vit_b", doubled_mlp_residual=True)
    result = export_onnx(model, tmp_path)
    # The export's own check: both graphs against PyTorch on a seeded input and prompt.
    assert all(v < 1e-4 for k, v in result.check.items() if k.endswith("_max_rel")), result.check
    rgb = make_phantom(seed=2, size=300).image[:, :240]
    pred, onnx_pred = Predictor(model), OnnxPredictor(tmp_path)
    pred.set_image(rgb)
    onnx_pred.set_image(rgb)
    ref = pred.get_image_embedding().numpy()
    assert np.abs(onnx_pred.get_image_embedding() - ref).max() <= 1e-4 * np.abs(ref).max()
    for prompt in ({"box": np.array([30, 40, 200, 220]), "multimask_output": False},
                   {"point_coords": np.array([[120, 150]]), "point_labels": np.array([1])}):
        logits = pred.predict(**prompt, return_logits=True)[0]
        want, got = pred.predict(**prompt)[0], onnx_pred.predict(**prompt)[0]
        assert ((want == got) | (np.abs(logits) < 1e-3)).all()
