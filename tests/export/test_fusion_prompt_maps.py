"""The additive helpers the export uses in modeling.fusion leave FusionNet's outputs unchanged."""

from __future__ import annotations

import torch

from ultrasam.modeling.fusion import corner_boxes, rasterise_prompts


def test_mask_present_gates_mask_maps_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    coords = torch.rand(2, 3, 2, generator=g) * 128
    labels = torch.tensor([[1, 0, -1], [1, 1, 0]])
    mask = torch.randn(2, 1, 64, 64, generator=g) * 3
    none = rasterise_prompts(coords, labels, None, None, 2, 128, 64)
    plain = rasterise_prompts(coords, labels, None, mask, 2, 128, 64)
    off = rasterise_prompts(coords, labels, None, mask, 2, 128, 64, mask_present=torch.zeros(2))
    on = rasterise_prompts(coords, labels, None, mask, 2, 128, 64, mask_present=torch.ones(2))
    mixed = rasterise_prompts(coords, labels, None, mask, 2, 128, 64,
                              mask_present=torch.tensor([0.0, 1.0]))
    assert torch.equal(off, none) and torch.equal(on, plain)
    assert torch.equal(mixed[0], none[0]) and torch.equal(mixed[1], plain[1])
    assert not torch.equal(plain, none)  # the mask maps matter, so the test can fail


def test_corner_boxes_equal_explicit_boxes() -> None:
    coords = torch.tensor([[[30.0, 40.0], [10.0, 12.0], [90.0, 100.0]],
                           [[30.0, 40.0], [50.0, 60.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 2, 3], [1, 0, -1]])
    boxes = corner_boxes(coords, labels)
    assert boxes.tolist() == [[10.0, 12.0, 90.0, 100.0], [-1.0, -1.0, -1.0, -1.0]]
    from_corners = rasterise_prompts(coords, labels, None, None, 2, 128, 64)
    explicit = rasterise_prompts(coords, labels, boxes, None, 2, 128, 64)
    assert torch.equal(from_corners, explicit)
    assert from_corners[0, 2].sum() > 0 and from_corners[1, 2:4].sum() == 0
