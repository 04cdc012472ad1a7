"""BatchNorm folding (modeling.fold): the folded model computes what the unfolded one does."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ultrasam.config import get_config
from ultrasam.modeling import FusionNet, build_model
from ultrasam.modeling.fold import fold_batchnorm, fold_conv_bn

SMALL = dict(img_size=64, conv_dims=(8, 16, 16, 16), conv_depths=(1, 2, 1, 1),
             prompt_embed_dim=16, iou_head_hidden_dim=16)


def _randomise_bn(model: nn.Module, seed: int) -> None:
    # Fresh BatchNorms are the identity (mean 0, var 1, weight 1, bias 0): give them real
    # statistics, or a fold that ignored them would pass.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g))


def test_fold_conv_bn_matches_conv_then_bn() -> None:
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1, bias=True), nn.BatchNorm2d(5)
    _randomise_bn(bn, 1)
    bn.eval()
    x = torch.randn(2, 3, 9, 9)
    want = bn(conv(x))
    fold_conv_bn(conv, bn)
    torch.testing.assert_close(conv(x), want, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_keeps_fusionnet_outputs() -> None:
    torch.manual_seed(0)
    model = build_model(get_config("fusion", **SMALL))
    assert isinstance(model, FusionNet)
    _randomise_bn(model, 2)
    model.eval()
    folded = copy.deepcopy(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(folded) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    coords = torch.tensor([[[20.0, 30.0]], [[40.0, 10.0]]])
    labels = torch.ones(2, 1)
    with torch.no_grad():
        emb, emb_f = model.encode(x), folded.encode(x)
        torch.testing.assert_close(emb_f, emb, atol=1e-4, rtol=1e-4)
        logits, iou = model.decode(emb, coords, labels)
        logits_f, iou_f = folded.decode(emb, coords, labels)
    torch.testing.assert_close(logits_f, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(iou_f, iou, atol=1e-4, rtol=1e-4)


def test_fold_batchnorm_refuses_training_mode() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(model.train())
