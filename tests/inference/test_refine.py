"""Refinement: a prompt's output must not depend on the other prompts of the call.

Pass 2 of a point prompt is decoded with its derived box as [corner, corner] (Meta's box
tokens). When the batch also held a prompt that keeps its prompt (a box given as corner
points, or a point whose first mask is empty), both used to be packed into one padded point
list, adding "not a point" tokens that change the decoder's attention.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ultrasam import Predictor
from ultrasam.inference.refine import boxes_from_logits, refine_two_pass
from ultrasam.modeling import build_model


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_refined_point_is_independent_of_a_box_in_the_same_call(fast: bool) -> None:
    predictor = Predictor(_model(0), fast=fast)
    image = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    predictor.set_image(image)
    t = predictor.transform
    point = t.apply_coords(np.array([[70.0, 45.0], [0.0, 0.0]]), predictor.original_size)
    corners = t.apply_coords(np.array([[20.0, 10.0], [100.0, 80.0]]), predictor.original_size)
    coords = torch.as_tensor(np.stack([point, corners]), dtype=torch.float)
    labels = torch.tensor([[1, -1], [2, 3]])
    with torch.no_grad():
        both = predictor.predict_torch(coords, labels, refine=True, return_logits=True)
        alone_point = predictor.predict_torch(coords[:1], labels[:1], refine=True,
                                              return_logits=True)
        alone_box = predictor.predict_torch(coords[1:], labels[1:], refine=True,
                                            return_logits=True)
    for k, alone in ((0, alone_point), (1, alone_box)):
        torch.testing.assert_close(both[0][k], alone[0][0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both[1][k], alone[1][0], atol=1e-5, rtol=1e-5)


def test_empty_first_mask_keeps_the_prompt_tokens() -> None:
    model = _model(1)   # this random model's first-pass masks are empty
    torch.manual_seed(3)
    emb = torch.randn(1, 32, 8, 8)
    coords = torch.tensor([[[40.0, 50.0]], [[90.0, 20.0]]])
    labels = torch.ones((2, 1), dtype=torch.long)
    sizes = torch.tensor([[96, 128]])
    with torch.no_grad():
        out = refine_two_pass(model, emb, coords, labels, None, input_sizes=sizes)
        _, non_empty = boxes_from_logits(out.pass1_logits, model.img_size, sizes)
        assert not non_empty.any()          # the case under test
        ref = model.decode(emb, coords, labels, None, out.pass1_logits, multimask_output=True)
    torch.testing.assert_close(out.pass2_logits, ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.pass2_iou, ref[1], atol=1e-5, rtol=1e-5)


def test_one_prompt_per_image_batches_refine_per_image() -> None:
    """image_index None with B == P images: each prompt stays on its own image."""
    model = _model(0)
    torch.manual_seed(4)
    emb = torch.randn(2, 32, 8, 8)
    coords = torch.tensor([[[40.0, 50.0], [0.0, 0.0]], [[10.0, 20.0], [100.0, 90.0]]])
    labels = torch.tensor([[1, -1], [2, 3]])
    with torch.no_grad():
        both = refine_two_pass(model, emb, coords, labels, None)
        first = refine_two_pass(model, emb[:1], coords[:1], labels[:1], None)
        second = refine_two_pass(model, emb[1:], coords[1:], labels[1:], None)
    torch.testing.assert_close(both.logits[:1], first.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.logits[1:], second.logits, atol=1e-5, rtol=1e-5)
