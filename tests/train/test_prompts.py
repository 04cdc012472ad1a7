"""Prompt simulation: geometry, labels, determinism and error handling."""

from __future__ import annotations

import pytest
import torch

from ultrasam.train.prompts import (BOX_BR, BOX_TL, NEG, PAD, POS, Prompts, boxes_from_masks,
                                    concat_prompts, corrective_clicks, ellipse_mask_logits,
                                    jitter_boxes, negative_region, refinement_prompts,
                                    sample_points, simulate_prompts)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rect_masks() -> torch.Tensor:
    """Two instances on a 40 x 60 frame: rows 5-14 x cols 10-29, rows 20-34 x cols 40-49."""
    m = torch.zeros((2, 40, 60), dtype=torch.bool)
    m[0, 5:15, 10:30] = True
    m[1, 20:35, 40:50] = True
    return m


def test_boxes_from_masks_use_exclusive_end_and_flag_empty() -> None:
    m = torch.cat([rect_masks(), torch.zeros((1, 40, 60), dtype=torch.bool)])
    boxes, valid = boxes_from_masks(m)
    assert boxes.tolist() == [[10, 5, 30, 15], [40, 20, 50, 35], [0, 0, 0, 0]]
    assert valid.tolist() == [True, True, False]


def test_jitter_stays_within_fraction_of_size_and_frame() -> None:
    boxes = torch.tensor([[10.0, 5.0, 30.0, 15.0]]).repeat(500, 1)
    out = jitter_boxes(boxes, 0.05, (40, 60), gen())
    delta = (out - boxes).abs()
    assert (delta[:, [0, 2]] <= 0.05 * 20 + 1e-6).all()
    assert (delta[:, [1, 3]] <= 0.05 * 10 + 1e-6).all()
    assert delta.max() > 0.5  # it does move
    edge = jitter_boxes(torch.tensor([[0.0, 0.0, 60.0, 40.0]]).repeat(50, 1), 0.2, (40, 60), gen())
    assert (edge[:, 0] >= 0).all() and (edge[:, 2] <= 60).all() and (edge[:, 3] <= 40).all()
    with pytest.raises(ValueError, match="jitter"):
        jitter_boxes(boxes, -0.1, (40, 60), gen())


def test_sampled_points_fall_inside_their_region() -> None:
    m = rect_masks()
    xy, ok = sample_points(m, 50, gen(3))
    assert xy.shape == (2, 50, 2) and ok.all()
    cols, rows = (xy[..., 0] + 0.5).floor().long(), (xy[..., 1] + 0.5).floor().long()
    for p in range(2):
        assert m[p, rows[p], cols[p]].all()
    _, ok = sample_points(torch.zeros((1, 8, 8), dtype=torch.bool), 2, gen())
    assert not ok.any()


def test_negative_region_is_near_the_object_and_outside_it() -> None:
    m = rect_masks()
    boxes, _ = boxes_from_masks(m)
    region = negative_region(m, boxes, margin=0.25)
    assert not (region & m).any()
    assert region[0, 5:15, 5:10].all()          # just left of instance 0
    assert not region[0, 35:, :].any()          # far below it


def test_simulated_prompts_have_the_documented_layout() -> None:
    m = rect_masks().repeat(50, 1, 1)
    pr = simulate_prompts(m, gen(1), mask_size=16, input_size=64, p_box=0.5, p_multi_point=0.5,
                          max_positive=3, max_negative=2, p_ellipse_mask=1.0)
    assert pr.coords.shape == (100, 5, 2) and pr.labels.shape == (100, 5)
    boxes = pr.labels[pr.is_box]
    assert (boxes[:, 0] == BOX_TL).all() and (boxes[:, 1] == BOX_BR).all()
    assert (boxes[:, 2:] == PAD).all()
    points = pr.labels[~pr.is_box]
    assert ((points == POS).sum(1) >= 1).all() and ((points == POS).sum(1) <= 3).all()
    assert (points == NEG).any() and ((points == NEG).sum(1) <= 2).all()
    assert 20 < int(pr.is_box.sum()) < 80
    # Positive points lie in their instance, negative ones outside it.
    idx = torch.nonzero(pr.labels == POS)
    xy = pr.coords[idx[:, 0], idx[:, 1]]
    c, r = (xy[:, 0] + 0.5).floor().long(), (xy[:, 1] + 0.5).floor().long()
    assert m[idx[:, 0], r, c].all()
    idx = torch.nonzero(pr.labels == NEG)
    xy = pr.coords[idx[:, 0], idx[:, 1]]
    c, r = (xy[:, 0] + 0.5).floor().long(), (xy[:, 1] + 0.5).floor().long()
    assert not m[idx[:, 0], r, c].any()
    # Ellipse mask prompts only for boxes.
    assert pr.mask_inputs is not None and pr.mask_inputs.shape == (100, 1, 16, 16)
    assert torch.equal(pr.has_mask, pr.is_box)


def test_simulation_is_a_function_of_the_generator_seed() -> None:
    m = rect_masks()
    a = simulate_prompts(m, gen(7), mask_size=16, input_size=64, p_multi_point=0.5)
    b = simulate_prompts(m, gen(7), mask_size=16, input_size=64, p_multi_point=0.5)
    c = simulate_prompts(m, gen(8), mask_size=16, input_size=64, p_multi_point=0.5)
    assert torch.equal(a.coords, b.coords) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.coords, c.coords)


def test_simulation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="p_box"):
        simulate_prompts(rect_masks(), gen(), mask_size=16, input_size=64, p_box=1.5)
    with pytest.raises(ValueError, match="empty instance"):
        simulate_prompts(torch.zeros((1, 8, 8), dtype=torch.bool), gen(), mask_size=2,
                         input_size=8)
    with pytest.raises(ValueError, match="P >= 1"):
        simulate_prompts(torch.zeros((0, 8, 8), dtype=torch.bool), gen(), mask_size=2,
                         input_size=8)


def test_ellipse_mask_is_the_inscribed_ellipse() -> None:
    logits = ellipse_mask_logits(torch.tensor([[0.0, 0.0, 64.0, 32.0]]), 64, 16, logit=3.0)
    inside = logits[0, 0] > 0
    assert logits.abs().eq(3.0).all()
    assert inside[4, 8] and inside[4, 1] and not inside[0, 0] and not inside[10, 8]
    assert inside[:8].sum() > 0 and not inside[8:].any()


def test_corrective_clicks_target_the_error_region_with_the_right_label() -> None:
    target = torch.zeros((3, 8, 8))
    target[:, 2:6, 2:6] = 1
    logits = torch.full((3, 8, 8), -5.0)
    logits[0, 2:6, 2:6] = 5   # perfect -> no click
    logits[1, 2:6, 2:4] = 5   # misses cols 4-5 -> positive click there
    logits[2] = 5             # everything -> negative click outside the target
    coords, labels = corrective_clicks(logits, target, gen(0), scale=4.0)
    assert labels[:, 0].tolist() == [PAD, POS, NEG]
    cell = ((coords[:, 0] + 0.5) / 4).floor().long()
    assert 4 <= cell[1, 0] <= 5 and 2 <= cell[1, 1] <= 5
    assert target[2, cell[2, 1], cell[2, 0]] == 0


def test_refinement_swaps_points_for_the_first_mask_box() -> None:
    coords = torch.tensor([[[5.0, 5.0], [0.0, 0.0]], [[1.0, 2.0], [30.0, 20.0]]])
    labels = torch.tensor([[POS, PAD], [BOX_TL, BOX_BR]])
    pr = Prompts(coords, labels, None, torch.zeros(2, dtype=torch.bool),
                 torch.tensor([False, True]))
    logits = torch.full((2, 1, 16, 16), -1.0, requires_grad=True)
    with torch.no_grad():
        logits[:, :, 1:3, 1:4] = 1.0   # low-res cells -> input pixels 4-15 x 4-11
    out = refinement_prompts(pr, logits, 64, torch.tensor([[64, 64], [64, 64]]))
    assert out.labels[0].tolist() == [BOX_TL, BOX_BR]
    assert out.coords[0].tolist() == [[3.5, 3.5], [15.5, 11.5]]
    assert torch.equal(out.coords[1], coords[1]) and out.has_mask.all()
    assert out.mask_inputs is logits  # kept in the graph, not detached


def test_concat_pads_point_lists_and_masks() -> None:
    m = rect_masks()
    a = simulate_prompts(m, gen(0), mask_size=16, input_size=64, max_positive=1, max_negative=0)
    b = simulate_prompts(m, gen(1), mask_size=16, input_size=64, max_positive=3,
                         max_negative=2, p_box=1.0, p_ellipse_mask=1.0, p_multi_point=0.5)
    both = concat_prompts([a, b], 16)
    assert both.coords.shape == (4, 5, 2) and (both.labels[:2, 2:] == PAD).all()
    assert both.mask_inputs is not None and both.has_mask.tolist() == [False, False, True, True]
