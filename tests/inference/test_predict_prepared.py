"""Batched decoding of prepared prompts (Predictor.prepare_prompt / predict_prepared): prompts of
several images and layouts decoded together give what each gives alone.

Tolerance: batched and single decodes run the same function on differently shaped tensors, so
only float rounding may differ: logits and scores within 1e-4 (relative and absolute), and a
mask pixel may differ only where its logit lies within 1e-3 of the threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from ultrasam.config import get_config
from ultrasam.inference.predictor import Predictor, PreparedPrompt
from ultrasam.inference.prompt_batch import PromptTensors, batch_key, batch_sizes, stack_prompts
from ultrasam.modeling import build_model

SMALL_FUSION: dict[str, Any] = {"img_size": 64, "conv_dims": (8, 16, 16, 16),
                                "conv_depths": (1, 1, 1, 1), "prompt_embed_dim": 16,
                                "iou_head_hidden_dim": 16}
RTOL = ATOL = 1e-4
EDGE = 1e-3


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _model(kind: str) -> Any:
    torch.manual_seed(0)
    if kind == "fusion":
        return build_model(get_config("fusion", **SMALL_FUSION)).eval()
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # random weights far from zero: masks with edges
    return model


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (90, 140, 3), dtype=np.uint8),
            rng.integers(0, 255, (120, 100, 3), dtype=np.uint8)]


def _prompts(w: int, h: int, refine: bool) -> list[dict[str, Any]]:
    """Layouts a user sends: one click, clicks with negatives, a box, click + box, a mask."""
    cx, cy = w / 2, h / 2
    box = np.array([cx - 30, cy - 25, cx + 30, cy + 25])
    out: list[dict[str, Any]] = [
        {"point_coords": np.array([[cx, cy]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[cx, cy], [5, 5]]), "point_labels": np.array([1, 0]),
         "multimask_output": False},
        {"point_coords": np.array([[cx, cy], [cx + 10, cy], [3, h - 3]]),
         "point_labels": np.array([1, 1, 0]), "multimask_output": False},
        {"box": box, "multimask_output": False},
        {"point_coords": np.array([[cx, cy]]), "point_labels": np.array([1]), "box": box,
         "multimask_output": False},
    ]
    if refine:
        out += [{"point_coords": np.array([[cx, cy]]), "point_labels": np.array([1]),
                 "refine": True},
                {"box": box, "refine": True},
                {"point_coords": np.array([[cx, cy], [4, 4]]), "point_labels": np.array([1, 0]),
                 "refine": True}]
    return out


def _cases(predictor: Predictor, refine: bool) -> list[tuple[Any, dict[str, Any]]]:
    """(image state, prompt kwargs) for every prompt on both images, images interleaved, plus
    a prompt carrying the previous low-res mask."""
    cases = []
    states = []
    for image in _images():
        predictor.set_image(image)
        states.append(predictor.image_state)
    h0, w0 = _images()[0].shape[:2]
    h1, w1 = _images()[1].shape[:2]
    for a, b in zip(_prompts(w0, h0, refine), _prompts(w1, h1, refine)):
        cases += [(states[0], a), (states[1], b)]
    predictor._state = states[1]
    _, _, low = predictor.predict(point_coords=np.array([[w1 / 2, h1 / 2]]),
                                  point_labels=np.array([1]), multimask_output=False)
    cases.append((states[1], {"point_coords": np.array([[w1 / 3, h1 / 3]]),
                              "point_labels": np.array([1]), "mask_input": low,
                              "multimask_output": False}))
    return cases


def _alone(predictor: Predictor, state: Any, kwargs: dict[str, Any],
           return_logits: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    predictor._state = state  # the predictor of that image, as a user would have it
    return predictor.predict(**kwargs, return_logits=return_logits)


def _check_same(batched: tuple[np.ndarray, ...], alone: tuple[np.ndarray, ...],
                logits: bool) -> None:
    for b, a in zip(batched, alone):
        assert b.shape == a.shape and b.dtype == a.dtype
    np.testing.assert_allclose(batched[1], alone[1], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(batched[2], alone[2], rtol=RTOL, atol=ATOL)
    if logits:
        np.testing.assert_allclose(batched[0], alone[0], rtol=RTOL, atol=ATOL)
    else:
        # Differences only on the threshold (checked against the low-res logits' decisions).
        assert (batched[0] != alone[0]).mean() < 1e-3


@pytest.mark.parametrize("kind,fast", [("fusion", True), ("sam", True), ("sam", False)])
@pytest.mark.parametrize("return_logits", [False, True])
def test_batched_equals_one_by_one(kind: str, fast: bool, return_logits: bool) -> None:
    predictor = Predictor(_model(kind), fast=fast)
    cases = _cases(predictor, refine=True)
    prepared = [predictor.prepare_prompt(**kw, state=s) for s, kw in cases]
    batched = predictor.predict_prepared(prepared, return_logits=return_logits)
    assert len(batched) == len(cases)
    for out, (state, kwargs) in zip(batched, cases):
        _check_same(out, _alone(predictor, state, kwargs, return_logits), return_logits)
    if not return_logits:
        # A mask pixel may flip only where the (batched) logits sit on the threshold.
        logits = predictor.predict_prepared(prepared, return_logits=True)
        for out, lg, (state, kwargs) in zip(batched, logits, cases):
            flips = out[0] != _alone(predictor, state, kwargs, False)[0]
            assert np.all(np.abs(lg[0][flips]) < EDGE)


def test_fusion_batches_across_images_and_layouts() -> None:
    """Without refinement, FusionNet needs one decode per (multimask, has mask) group."""
    model = _model("fusion")
    predictor = Predictor(model)
    cases = _cases(predictor, refine=False)
    calls: list[int] = []
    hook = model.prompt_in.register_forward_hook(lambda m, i, o: calls.append(o.shape[0]))
    try:
        prepared = [predictor.prepare_prompt(**kw, state=s) for s, kw in cases]
        predictor.predict_prepared(prepared)
        # one-click multimask (2 prompts), single-mask layouts (8), the mask prompt (1)
        assert sorted(calls) == [1, 2, 8]
        calls.clear()
        predictor.predict_prepared(prepared, max_batch=3)
        assert sorted(calls) == [1, 2, 2, 3, 3] and sum(calls) == len(cases)
        calls.clear()
        # Power-of-two calls: the 8 single-mask prompts at max_batch 3 -> 3, 3, 2; at 5 -> 5,
        # then the rest 3 as 2 + 1; answers as before.
        out = predictor.predict_prepared(prepared, max_batch=5, pow2_batches=True)
        assert sorted(calls) == [1, 1, 2, 2, 5]
        for a, b in zip(out, predictor.predict_prepared(prepared)):
            np.testing.assert_allclose(a[1], b[1], rtol=RTOL, atol=ATOL)
    finally:
        hook.remove()


def test_batch_sizes() -> None:
    assert batch_sizes(11, 16) == [11] and batch_sizes(11, 16, pow2=True) == [8, 2, 1]
    assert batch_sizes(16, 16, pow2=True) == [16] and batch_sizes(0, 4, pow2=True) == []
    assert batch_sizes(23, 8, pow2=True) == [8, 8, 4, 2, 1] and batch_sizes(23, 8) == [8, 8, 7]
    for n in range(40):
        for pow2 in (False, True):
            sizes = batch_sizes(n, 6, pow2)
            assert sum(sizes) == n and all(1 <= s <= 6 for s in sizes)
            if pow2:
                assert all(s == 6 or s & (s - 1) == 0 for s in sizes)
    with pytest.raises(ValueError, match="max_batch"):
        batch_sizes(3, 0)


def test_sam_batches_only_identical_layouts_per_image() -> None:
    """SAM's decoder attends to padding tokens: prompts differing in points or box are never
    stacked, and the fast decoder's per-image cache keeps each call on one image."""
    tensors = [PromptTensors(torch.zeros(1, n, 2), torch.ones(1, n, dtype=torch.int),
                             box, None, False, False)
               for n, box in ((1, None), (2, None), (1, torch.zeros(1, 4)))]
    assert len({batch_key(t, exact_padding=False) for t in tensors}) == 3
    assert len({batch_key(t, exact_padding=True) for t in tensors}) == 1
    stacked = stack_prompts(tensors)
    assert stacked.point_coords is not None and stacked.point_labels is not None
    assert stacked.point_labels.tolist() == [[1, -1], [1, 1], [1, -1]]
    assert stacked.box is not None and stacked.box[:2].eq(-1).all()


def test_prepare_and_predict_prepared_refuse_bad_input() -> None:
    predictor = Predictor(_model("fusion"))
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.prepare_prompt(box=np.array([0, 0, 5, 5]))
    predictor.set_image(_images()[0])
    with pytest.raises(ValueError, match="outside"):
        predictor.prepare_prompt(point_coords=np.array([[500, 5]]), point_labels=np.array([1]))
    with pytest.raises(ValueError, match="no prompt"):
        predictor.prepare_prompt()
    good = predictor.prepare_prompt(box=np.array([0, 0, 50, 50]))
    assert isinstance(good, PreparedPrompt)
    with pytest.raises(TypeError, match="PreparedPrompt"):
        predictor.predict_prepared([good, {"box": [0, 0, 5, 5]}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_batch"):
        predictor.predict_prepared([good], max_batch=0)
    assert predictor.predict_prepared([]) == []
