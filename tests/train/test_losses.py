"""Losses: hand-checked values, best-output selection, the IoU regression target."""

from __future__ import annotations

import math

import pytest
import torch

from ultrasam.train.losses import (dice_loss, mask_iou, prompt_losses, select_best,
                                   sigmoid_focal_loss)


def test_focal_matches_the_formula_on_two_pixels() -> None:
    logits = torch.tensor([[[2.0, -1.0]]])
    target = torch.tensor([[[1.0, 1.0]]])
    p = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    expected = sum(-0.25 * (1 - q) ** 2 * math.log(q) for q in p) / 2
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    bg = sigmoid_focal_loss(torch.tensor([[[0.0]]]), torch.tensor([[[0.0]]]))
    assert bg.item() == pytest.approx(0.75 * 0.25 * math.log(2), rel=1e-6)


def test_dice_is_zero_for_confident_perfect_and_near_one_for_disjoint() -> None:
    target = torch.zeros((2, 8, 8))
    target[:, :4] = 1
    perfect = (target * 2 - 1) * 50
    assert dice_loss(perfect, target)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(-perfect, target)[0].item() > 0.95
    with pytest.raises(ValueError, match="same shape"):
        dice_loss(perfect[:, :4], target)


def test_mask_iou_and_best_selection() -> None:
    target = torch.zeros((1, 4, 4))
    target[0, :2] = 1                    # 8 pixels
    outs = torch.full((1, 3, 4, 4), -1.0)
    outs[0, 0, :1] = 1                   # 4 of 8 -> 0.5
    outs[0, 1, :2] = 1                   # exact -> 1.0
    outs[0, 2] = 1                       # all 16 -> 0.5
    iou = mask_iou(outs, target)
    assert iou.tolist() == [[0.5, 1.0, 0.5]]
    best, actual = select_best(outs, target)
    assert best.tolist() == [1] and torch.equal(actual, iou)
    assert mask_iou(torch.full((1, 1, 2, 2), -1.0), torch.zeros((1, 2, 2))).item() == 1.0


def test_prompt_losses_use_the_best_output_and_weights() -> None:
    target = torch.zeros((1, 4, 4))
    target[0, :2] = 1
    logits = torch.full((1, 3, 4, 4), -3.0, requires_grad=True)
    with torch.no_grad():
        logits[0, 1, :2] = 3.0
    iou_pred = torch.tensor([[0.2, 0.4, 0.9]], requires_grad=True)
    t = prompt_losses(logits, iou_pred, target, focal_weight=20, dice_weight=1, iou_weight=1)
    chosen = logits[:, 1]
    expected = (20 * sigmoid_focal_loss(chosen, target) + dice_loss(chosen, target)
                + (0.4 - 1.0) ** 2)
    assert t["best"].tolist() == [1]
    assert t["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    t["loss"].sum().backward()
    assert logits.grad is not None and logits.grad[0, 0].abs().sum() == 0   # unchosen outputs
    assert iou_pred.grad is not None and iou_pred.grad[0, 2] == 0
    every = prompt_losses(logits, iou_pred, target, iou_on="all")
    assert every["iou_mse"].item() == pytest.approx(((0.2 - 0) ** 2 + 0.6 ** 2 + 0.9 ** 2) / 3,
                                                    rel=1e-5)
    with pytest.raises(ValueError, match="iou_on"):
        prompt_losses(logits, iou_pred, target, iou_on="mean")
