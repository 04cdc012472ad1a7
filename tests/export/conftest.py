"""Exports shared by the ONNX tests: each random-weight variant is exported once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("onnx", reason="the ONNX tests need the 'onnx' extra")
pytest.importorskip("onnxruntime", reason="the ONNX tests need the 'onnx' extra")

import torch

from ultrasam.modeling import build_model
from ultrasam.modeling.base import PromptableModel


def seeded_model(variant: str, **overrides: object) -> PromptableModel:
    """A random model whose weights depend only on (variant, overrides)."""
    from ultrasam.config import get_config

    torch.manual_seed(1234)
    model = build_model(get_config(variant, **overrides)).eval()
    if variant == "fusion":
        # The same weights plus a global-context block, as the default model has, so the
        # graphs carry attention; its residual branches start at zero (the identity), so
        # they get small random weights.
        from ultrasam.train.fusion_loop import warm_start

        state = model.state_dict()
        model = build_model(get_config(variant, fusion_context_depth=1, **overrides)).eval()
        warm_start(model, state)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(6)
        with torch.no_grad():
            for p in model.context.parameters():  # type: ignore[union-attr]
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
        # Random BatchNorm statistics (fresh ones are 0 / 1) so the graphs see real values.
        g = torch.Generator().manual_seed(5)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory
             ) -> Callable[..., tuple[PromptableModel, Path]]:
    """``exported(variant, **options)`` -> (model, folder), exporting on first use."""
    from ultrasam.export.onnx_export import export_onnx

    cache: dict[tuple, tuple[PromptableModel, Path]] = {}

    def get(variant: str, preprocessing: str = "sam", **options: object
            ) -> tuple[PromptableModel, Path]:
        key = (variant, preprocessing, tuple(sorted(options.items())))
        if key not in cache:
            model = seeded_model(variant, preprocessing=preprocessing)
            out = tmp_path_factory.mktemp(f"onnx-{variant}")
            export_onnx(model, out, **options)  # type: ignore[arg-type]
            cache[key] = (model, out)
        return cache[key]

    return get
