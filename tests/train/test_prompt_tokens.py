"""Training feeds the decoder the same prompt tokens as inference.

Every padding slot of a training prompt is one more "not a point" token the decoder attends
to. Inference (Meta's layout, ``Sam.decode`` / the predictor) feeds a single point as
[point, not-a-point] and a box as [corner, corner]; with the paper's recipe (one point or one
box, ``p_multi_point = 0``) training must decode exactly those tokens.
"""

from __future__ import annotations

import torch

from ultrasam.modeling import build_model
from ultrasam.train.config import TrainConfig
from ultrasam.train.loop import PromptedTraining
from ultrasam.train.prompts import BOX_BR, BOX_TL, PAD, POS, simulate_prompts


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _masks() -> torch.Tensor:
    m = torch.zeros((6, 100, 128), dtype=torch.bool)
    for i in range(6):
        m[i, 10 + 10 * i:40 + 10 * i, 8 + 15 * i:30 + 15 * i] = True
    return m


def test_single_point_recipe_uses_meta_token_layout() -> None:
    pr = simulate_prompts(_masks(), torch.Generator().manual_seed(0), mask_size=32,
                          input_size=128, p_box=0.5, p_multi_point=0.0)
    assert pr.coords.shape == (6, 2, 2) and pr.labels.shape == (6, 2)
    assert 0 < int(pr.is_box.sum()) < 6
    assert (pr.labels[pr.is_box] == torch.tensor([BOX_TL, BOX_BR])).all()
    assert (pr.labels[~pr.is_box] == torch.tensor([POS, PAD])).all()


def test_training_decode_equals_inference_decode() -> None:
    model = _model()
    net = PromptedTraining(model, TrainConfig())
    pr = simulate_prompts(_masks(), torch.Generator().manual_seed(0), mask_size=32,
                          input_size=128, p_box=0.5, p_multi_point=0.0)
    emb = torch.randn(1, 32, 8, 8)
    index = torch.zeros(len(pr), dtype=torch.long)
    with torch.no_grad():
        train_logits, train_iou = net.decode(emb, pr, index, multimask=False)
        for k in range(len(pr)):
            if pr.is_box[k]:
                ref = model.decode(emb, boxes=pr.coords[k, :2].reshape(1, 4), multimask_output=False)
            else:
                ref = model.decode(emb, pr.coords[k:k + 1, :1], pr.labels[k:k + 1, :1],
                                   multimask_output=False)
            torch.testing.assert_close(train_logits[k:k + 1], ref[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(train_iou[k:k + 1], ref[1], atol=1e-5, rtol=1e-5)


def test_mixed_point_counts_decode_like_inference() -> None:
    """Multi-point recipes pad point lists; each prompt must still see only its own tokens."""
    model = _model()
    net = PromptedTraining(model, TrainConfig())
    pr = simulate_prompts(_masks(), torch.Generator().manual_seed(3), mask_size=32,
                          input_size=128, p_box=0.4, p_multi_point=1.0, max_positive=3,
                          max_negative=2)
    counts = (pr.labels != PAD).sum(1)
    assert len(torch.unique(counts)) > 1  # the batch really mixes token counts
    emb = torch.randn(2, 32, 8, 8)
    index = torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        logits, iou = net.decode(emb, pr, index, multimask=True)
        for k in range(len(pr)):
            real = pr.labels[k] != PAD
            c, lab = pr.coords[k][real][None], pr.labels[k][real][None]
            is_box = (lab == BOX_TL) | (lab == BOX_BR)
            if bool(is_box.any()):
                box = c[0][is_box[0]].reshape(1, 4)
                pts = c[:, ~is_box[0]] if bool((~is_box).any()) else None
                pl = lab[:, ~is_box[0]] if pts is not None else None
                ref = model.decode(emb[index[k]:index[k] + 1], pts, pl, box,
                                   multimask_output=True)
            else:
                ref = model.decode(emb[index[k]:index[k] + 1], c, lab, multimask_output=True)
            torch.testing.assert_close(logits[k:k + 1], ref[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(iou[k:k + 1], ref[1], atol=1e-5, rtol=1e-5)
