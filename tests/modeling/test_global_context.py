"""Global-context blocks in FusionNet: identity at initialisation (so a warm start from weights
trained without them changes nothing), a receptive field covering the whole grid once trained,
and the warm-start loader's rules."""

from __future__ import annotations

import pytest
import torch

from ultrasam.config import get_config
from ultrasam.modeling import FusionNet, build_model
from ultrasam.modeling.global_context import GlobalContextBlock
from ultrasam.train.fusion_loop import warm_start

SMALL = {"img_size": 64, "conv_dims": (8, 16, 16, 16), "conv_depths": (1, 1, 1, 1),
         "prompt_embed_dim": 16, "iou_head_hidden_dim": 16, "decoder_num_heads": 4}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def fusion(depth: int, seed: int = 0) -> FusionNet:
    torch.manual_seed(seed)
    model = build_model(get_config("fusion", fusion_context_depth=depth, **SMALL))
    assert isinstance(model, FusionNet)
    return model.eval()


def randomise(module: torch.nn.Module, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def decode(model: FusionNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.tensor([[[20.0, 30.0], [40.0, 12.0]], [[5.0, 50.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [1, -1]])
    with torch.no_grad():
        return model.decode_all(model.encode(x), coords, labels, None, None)


def test_a_fresh_block_is_the_identity() -> None:
    block = GlobalContextBlock(16, 4, 2.0)
    x = torch.randn(2, 16, 4, 5)
    assert torch.equal(block(x), x)


def test_trained_block_mixes_the_whole_grid() -> None:
    block = GlobalContextBlock(16, 4, 2.0).eval()
    randomise(block)
    x = torch.randn(1, 16, 6, 6)
    y0 = block(x)
    x2 = x.clone()
    x2[0, :, 0, 0] += 3.0  # one corner token
    changed = (block(x2) - y0).abs().amax(dim=1)[0] > 1e-6
    # A 3x3 convolution would reach the 2 x 2 neighbourhood only; attention reaches every token.
    assert bool(changed.all())


def test_heads_must_divide_the_width() -> None:
    with pytest.raises(ValueError, match="divide"):
        GlobalContextBlock(10, 4, 2.0)


def test_warm_start_without_context_keys_reproduces_the_old_model() -> None:
    old = fusion(0)
    randomise(old.iou_head, seed=3)
    new = fusion(2, seed=7)
    added = warm_start(new, old.state_dict())
    assert added and all(k.startswith("context.") for k in added)
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(decode(old, x), decode(new, x)):
        assert torch.equal(a, b)
    # Once the blocks have weights the outputs move: they are on the decode path.
    randomise(new.context)
    assert not torch.allclose(decode(new, x)[0], decode(old, x)[0])


def test_warm_start_rejects_weights_that_do_not_fit() -> None:
    new = fusion(1)
    state = fusion(0).state_dict()
    del state["coarse.weight"]
    with pytest.raises(ValueError, match="coarse.weight"):
        warm_start(new, state)
    state = fusion(2).state_dict()  # a context block the model does not have
    with pytest.raises(ValueError, match="unexpected"):
        warm_start(new, state)
