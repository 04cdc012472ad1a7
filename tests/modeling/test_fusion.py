"""FusionNet (the early-fusion default architecture): prompt rasterisation, decode layouts,
the predictor path and gradients, on random weights of a small config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ultrasam.config import get_config
from ultrasam.inference.predictor import Predictor
from ultrasam.modeling import FusionNet, build_model
from ultrasam.modeling.fusion import CLICK_RADIUS, rasterise_prompts

SMALL = dict(img_size=64, conv_dims=(8, 16, 16, 16), conv_depths=(1, 1, 1, 1),
             prompt_embed_dim=16, iou_head_hidden_dim=16)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def small_model(seed: int = 0) -> FusionNet:
    torch.manual_seed(seed)
    model = build_model(get_config("fusion", **SMALL))
    assert isinstance(model, FusionNet)
    return model.eval()


def test_default_variant_size_and_fp16_budget() -> None:
    model = build_model("fusion")
    n = sum(p.numel() for p in model.parameters())
    assert 2_000_000 < n < 8_000_000  # fp16 file well under 16 MiB
    assert model.embedding_shape == (96, 64, 64)
    emb = model.encode(torch.zeros(1, 3, 256, 256))
    assert tuple(emb.shape[1:]) == model.embedding_shape


def test_click_disks_land_where_the_clicks_are() -> None:
    coords = torch.tensor([[[10.0, 20.0], [40.0, 8.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1]])
    maps = rasterise_prompts(coords, labels, None, None, 1, 64, 64)
    pos, neg = maps[0, 0], maps[0, 1]
    ys, xs = torch.nonzero(pos, as_tuple=True)
    # Every marked pixel centre lies within the radius of the click's pixel centre.
    d = ((xs + 0.5 - 10.5) ** 2 + (ys + 0.5 - 20.5) ** 2).sqrt()
    assert bool((d <= CLICK_RADIUS).all()) and pos[20, 10] == 1
    assert neg[8, 40] == 1 and neg[20, 10] == 0
    assert pos.sum() == neg.sum()  # same disk for both labels; the padding point draws nothing
    assert maps[0, 2:].abs().sum() == 0  # no box, no mask


def test_box_maps_and_corner_points_agree() -> None:
    box = torch.tensor([[8.0, 16.0, 40.0, 48.0]])
    maps = rasterise_prompts(None, None, box, None, 1, 64, 64)
    rect, ell = maps[0, 2], maps[0, 3]
    assert rect.sum() == 32 * 32 and rect[16:48, 8:40].all()
    assert bool((ell <= rect).all()) and 0.7 < ell.sum() / rect.sum() < 0.85  # pi / 4
    corners = torch.tensor([[[8.0, 16.0], [40.0, 48.0]]])
    as_points = rasterise_prompts(corners, torch.tensor([[2, 3]]), None, None, 1, 64, 64)
    assert torch.equal(as_points, maps)


def test_mask_present_gates_the_previous_mask() -> None:
    box = torch.tensor([[8.0, 16.0, 40.0, 48.0]] * 2)
    logits = torch.randn(2, 1, 64, 64)
    without = rasterise_prompts(None, None, box, None, 2, 64, 32)
    gated = rasterise_prompts(None, None, box, logits, 2, 64, 32,
                              mask_present=torch.tensor([False, True]))
    assert torch.equal(gated[0], without[0])
    expect = F.interpolate(torch.sigmoid(logits[1:]), (32, 32), mode="bilinear",
                           align_corners=False)[0, 0]
    assert torch.allclose(gated[1, 4], expect) and bool((gated[1, 5] == 1).all())


def test_decode_layouts_and_errors() -> None:
    model = small_model()
    emb = model.encode(torch.randn(2, 3, 64, 64))
    boxes = torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 12.0, 50.0, 60.0],
                          [0.0, 0.0, 64.0, 64.0]])
    idx = torch.tensor([0, 1, 1])
    multi, iou3 = model.decode(emb, boxes=boxes, image_index=idx)
    single, iou1 = model.decode(emb, boxes=boxes, image_index=idx, multimask_output=False)
    assert multi.shape == (3, 3, 64, 64) and single.shape == (3, 1, 64, 64)
    assert iou3.shape == (3, 3) and iou1.shape == (3, 1)
    everything, _ = model.decode_all(emb, None, None, boxes, None, idx)
    assert torch.equal(everything[:, :1], single) and torch.equal(everything[:, 1:], multi)
    # A prompt's output depends on its own image only.
    alone, _ = model.decode(emb[1:], boxes=boxes[1:2], multimask_output=False)
    assert torch.allclose(alone, single[1:2], atol=1e-5)
    with pytest.raises(ValueError, match="no prompt"):
        model.decode(emb)
    with pytest.raises(ValueError, match="image_index"):
        model.decode(emb, boxes=boxes)


def test_every_parameter_gets_a_gradient() -> None:
    model = small_model().train()
    x = torch.randn(2, 3, 64, 64)
    coords = torch.tensor([[[20.0, 20.0]], [[30.0, 40.0]]])
    labels = torch.tensor([[1], [0]])
    logits, iou, coarse = model.decode_all(model.encode(x), coords, labels,
                                           torch.tensor([[4.0, 4.0, 40.0, 40.0]] * 2),
                                           torch.randn(2, 1, 64, 64), coarse=True)
    (logits.mean() + iou.mean() + coarse.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_predictor_runs_every_prompt_kind_and_embedding_round_trip() -> None:
    model = small_model(1)
    pred = Predictor(model)
    rng = np.random.default_rng(0)
    image = (rng.random((50, 70)) * 255).astype(np.uint8)
    pred.set_image(image)
    box = np.array([10, 5, 50, 40])
    m1, s1, low = pred.predict(point_coords=[[30, 20], [5, 5]], point_labels=[1, 0], box=box)
    assert m1.shape == (3, 50, 70) and s1.shape == (3,) and low.shape == (3, 64, 64)
    m2, _, _ = pred.predict(mask_input=low[:1], multimask_output=False)
    m3, s3, _ = pred.predict(point_coords=[[30, 20]], point_labels=[1], refine=True)
    assert m2.shape == (1, 50, 70) and m3.shape == (1, 50, 70) and s3.shape == (1,)
    ref, _, ref_low = pred.predict(box=box, multimask_output=False, return_logits=True)
    emb = pred.get_image_embedding()
    other = Predictor(model)
    other.set_image_embedding(emb, (50, 70))
    again, _, again_low = other.predict(box=box, multimask_output=False, return_logits=True)
    assert torch.equal(torch.as_tensor(again_low), torch.as_tensor(ref_low))
    assert np.array_equal(again, ref)
