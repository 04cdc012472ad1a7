"""bf16 inference on the CPU: when ``auto`` picks it, that the context really autocasts, and
that the bundled model's masks under bf16 agree with fp32 on phantom lesions (box and click),
alone and through the server's model worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
from typing import Any

import numpy as np
import pytest
import torch

from ultrasam.evaluate.metrics import dice
from ultrasam.inference.precision import (
    cpu_has_native_bf16,
    precision_context,
    prepare_model,
    resolve_precision,
)
from ultrasam.inference.predictor import Predictor
from ultrasam.weights.checkpoints import load_model


def _prompts(lesion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.nonzero(lesion)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)
    return box, np.array([[xs.mean(), ys.mean()]])


def test_resolve_precision() -> None:
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    assert resolve_precision("auto") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="CPU setting"):
        resolve_precision("bf16", "cuda")
    with pytest.raises(ValueError, match="one of"):
        resolve_precision("fp16")


def test_context_autocasts_only_for_bf16() -> None:
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with precision_context("bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with precision_context("fp32"):
        assert (a @ b).dtype == torch.float32
    assert (a @ b).dtype == torch.float32  # left on exit


def test_prepare_model_sets_channels_last_and_folds_for_bf16_only() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fp32 = prepare_model(copy.deepcopy(model), "fp32")
    assert not fp32[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(fp32[1], torch.nn.BatchNorm2d)  # fp32 stays bit-exact: nothing folded
    bf16 = prepare_model(model, "bf16")
    assert bf16[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(bf16[1], torch.nn.Identity) and not bf16.training


@pytest.fixture(scope="module")
def default_model() -> torch.nn.Module:
    return load_model().eval()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bundled_model_bf16_agrees_with_fp32(default_model: torch.nn.Module, phantom_lesion: Any,
                                             seed: int) -> None:
    image, lesion = phantom_lesion(seed)
    box, click = _prompts(lesion)
    fp32 = Predictor(default_model)
    fp32.set_image(image)
    bf16 = Predictor(prepare_model(copy.deepcopy(default_model), "bf16"))
    with precision_context("bf16"):
        bf16.set_image(image)
        b_box, b_box_s, _ = bf16.predict(box=box, multimask_output=False)
        b_pt, _, _ = bf16.predict(click, np.array([1]), multimask_output=True)
    f_box, f_box_s, _ = fp32.predict(box=box, multimask_output=False)
    f_pt, _, _ = fp32.predict(click, np.array([1]), multimask_output=True)
    assert b_box.dtype == bool and b_box_s.dtype == np.float32  # numpy-friendly outputs
    assert dice(b_box[0], f_box[0]) >= 0.98 and dice(b_box[0], lesion) >= 0.8
    assert abs(float(b_box_s[0]) - float(f_box_s[0])) < 0.05
    for k in range(3):
        assert dice(b_pt[k], f_pt[k]) >= 0.95


def test_worker_in_bf16_answers_like_fp32(default_model: torch.nn.Module,
                                         phantom_lesion: Any) -> None:
    pytest.importorskip("fastapi", reason="ultrasam[serve] is not installed")
    from ultrasam.serve.store import Frame
    from ultrasam.serve.worker import ModelWorker, PromptSpec

    image, lesion = phantom_lesion(4)
    box, click = _prompts(lesion)
    specs = [PromptSpec(None, None, box, False), PromptSpec(click, np.array([1]), None, False),
             PromptSpec(click, np.array([1]), box, False)]
    answers = {}
    for precision in ("fp32", "bf16"):
        frame = Frame(rgb=image, spacing_mm=None, calibration=None, warnings=())
        worker = ModelWorker(copy.deepcopy(default_model), threads=1, torch_threads=1,
                             precision=precision)
        assert worker.precision == precision

        async def ask(w: ModelWorker = worker, f: Frame = frame) -> list[object]:
            return list(await asyncio.gather(*(w.segment(f, p) for p in specs)))

        try:
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                answers[precision] = pool.submit(asyncio.run, ask()).result()
        finally:
            worker.close()
        if precision == "bf16":  # the cached embedding is bf16: half the memory of fp32
            assert frame.state.features.dtype == torch.bfloat16  # type: ignore[union-attr]
    for a, b in zip(answers["fp32"], answers["bf16"]):
        assert dice(a.mask, b.mask) >= 0.97  # type: ignore[attr-defined]
    assert dice(answers["bf16"][0].mask, lesion) >= 0.8  # type: ignore[attr-defined]
