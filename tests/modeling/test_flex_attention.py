"""SAM's rel-pos attention without the materialised bias: every backend vs the SDPA path (CPU).

FlexAttention has no CPU backward, so its gradients are checked on a GPU only
(``benchmarks/bench_gpu.py`` trains with it); here its forward is checked, eager (the unfused
reference) and, in a slow test, compiled by Inductor.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from ultrasam.config import get_config
from ultrasam.modeling import build_model
from ultrasam.modeling.flex_attention import rel_pos_attention, rel_pos_terms, resolve_backend
from ultrasam.modeling.image_encoder import Attention
from ultrasam.modeling.rel_pos import decomposed_rel_pos_bias

# (grid, heads, head_dim): global-like, SAM's 14-px window shape, a non-square grid, a 1-row grid.
CASES = [((8, 8), 2, 16), ((14, 14), 1, 8), ((5, 7), 3, 16), ((1, 6), 2, 8)]


def _inputs(size: tuple[int, int], heads: int, d: int, seed: int = 0, batch: int = 2
            ) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    n = size[0] * size[1]
    q, k, v = (torch.randn(batch, heads, n, d, generator=g) for _ in range(3))
    rel_h = 0.5 * torch.randn(2 * size[0] - 1, d, generator=g)
    rel_w = 0.5 * torch.randn(2 * size[1] - 1, d, generator=g)
    return q, k, v, rel_h, rel_w


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor,
               rel_w: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax attention written out, the bias from the encoder's own helper."""
    b, h, n, d = q.shape
    bias = decomposed_rel_pos_bias(q.reshape(b * h, n, d), rel_h, rel_w, size).view(b, h, n, n)
    scores = q @ k.transpose(-1, -2) / d ** 0.5 + bias
    return torch.softmax(scores, dim=-1) @ v


@pytest.fixture(autouse=True)
def _quiet_flex() -> None:
    # Eager FlexAttention warns that it is unfused; that is the point of the CPU check.
    warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")


def test_rel_pos_terms_rebuild_the_materialised_bias() -> None:
    size = (5, 7)
    q, _, _, rel_h, rel_w = _inputs(size, 2, 16)
    th, tw = rel_pos_terms(q, rel_h, rel_w, size)
    assert th.shape == (2, 2, 35, 5) and tw.shape == (2, 2, 35, 7)
    rebuilt = (th[..., :, None] + tw[..., None, :]).reshape(2, 2, 35, 35)
    bias = decomposed_rel_pos_bias(q.reshape(4, 35, 16), rel_h, rel_w, size).view(2, 2, 35, 35)
    assert torch.equal(rebuilt, bias)


@pytest.mark.parametrize("backend", ["sdpa", "fold", "flex"])
@pytest.mark.parametrize("size,heads,d", CASES)
def test_backends_match_the_written_out_attention(backend: str, size: tuple[int, int],
                                                  heads: int, d: int) -> None:
    q, k, v, rel_h, rel_w = _inputs(size, heads, d)
    want = _reference(q, k, v, rel_h, rel_w, size)
    with torch.no_grad():
        got = rel_pos_attention(q, k, v, rel_h, rel_w, size, backend=backend)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # (B*heads) x N x d input works the same.
    with torch.no_grad():
        flat = rel_pos_attention(*(t.flatten(0, 1) for t in (q, k, v)), rel_h, rel_w, size,
                                 backend=backend)
    torch.testing.assert_close(flat, want.flatten(0, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size,heads,d", CASES)
def test_fold_gradients_match_sdpa(size: tuple[int, int], heads: int, d: int) -> None:
    inputs = [t.requires_grad_() for t in _inputs(size, heads, d, seed=3)]
    g = torch.randn(inputs[0].shape, generator=torch.Generator().manual_seed(4))
    grads = {}
    for backend in ("sdpa", "fold"):
        out = rel_pos_attention(*inputs, size, backend=backend)
        grads[backend] = torch.autograd.grad(out, inputs, g)
    for name, a, b in zip("q k v rel_h rel_w".split(), grads["sdpa"], grads["fold"]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_auto_is_the_default_path_on_cpu() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert resolve_backend("auto", torch.device("cuda")) == "fold"
    attn = Attention(32, 2, input_size=(6, 6))
    with torch.no_grad():
        attn.rel_pos_h.normal_()
        attn.rel_pos_w.normal_()
    x = torch.randn(3, 6, 6, 32)
    default = attn(x)
    attn.backend = "auto"
    assert torch.equal(attn(x), default)  # bit for bit: the same code path


def test_bad_arguments_are_named() -> None:
    q, k, v, rel_h, rel_w = _inputs((4, 4), 2, 8)
    with pytest.raises(ValueError, match="unknown attention backend 'fast'"):
        rel_pos_attention(q, k, v, rel_h, rel_w, (4, 4), backend="fast")
    with pytest.raises(ValueError, match=r"grid size \(4, 5\)"):
        rel_pos_attention(q, k, v, rel_h, rel_w, (4, 5))
    with pytest.raises(ValueError, match="share"):
        rel_pos_attention(q, k[..., :4], v, rel_h, rel_w, (4, 4))
    with pytest.raises(ValueError, match="unknown attention backend 'xla'"):
        Attention(16, 2, input_size=(4, 4), backend="xla")


def _tiny_encoder(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    enc = build_model(get_config("tiny")).image_encoder
    with torch.no_grad():  # SAM initialises these at zero: make the rel-pos path matter
        for name, p in enc.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0, 0.3)
    return enc


@pytest.mark.parametrize("backend", ["fold", "flex"])
def test_encoder_with_fused_backend_matches_default(backend: str) -> None:
    """Windowed (padded 8x8 grid in 3x3 windows) and global blocks, forward and backward."""
    enc = _tiny_encoder()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    want = enc(x)
    grads_want = torch.autograd.grad(want.square().sum(), list(enc.parameters()))
    for blk in enc.blocks:
        blk.attn.backend = backend
    if backend == "flex":  # no CPU backward
        with torch.no_grad():
            torch.testing.assert_close(enc(x), want, rtol=1e-4, atol=1e-4)
        return
    got = enc(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(got.square().sum(), list(enc.parameters()))
    for (name, _), a, b in zip(enc.named_parameters(), grads_want, grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=f"gradient of {name}")


def test_fold_under_bf16_autocast_stays_close() -> None:
    """bf16 changes the rounding, not the function: both paths land near the fp32 output."""
    enc = _tiny_encoder()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = enc(x)
        errs = {}
        for backend in ("sdpa", "fold"):
            for blk in enc.blocks:
                blk.attn.backend = backend
            with torch.autocast("cpu", dtype=torch.bfloat16):
                got = enc(x).float()
            errs[backend] = float((got - want).norm() / want.norm())
    assert errs["fold"] < 0.03, errs
    assert errs["fold"] < 2 * errs["sdpa"] + 1e-3, errs


@pytest.mark.slow
def test_inductor_compiled_fold_matches() -> None:
    """Inductor's CPU code for the fold path, forward and backward (~40 s on 2 cores).

    (Compiled FlexAttention is not checked on CPU: in torch 2.13 Inductor's C++ FlexAttention
    template rejects score_mod buffers computed inside the graph, as ``rel_h``/``rel_w`` are;
    the CUDA (Triton) template is exercised by ``benchmarks/bench_gpu.py``.)
    """
    torch._dynamo.reset()
    enc = _tiny_encoder()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    want = enc(x)
    grads_want = torch.autograd.grad(want.square().sum(), list(enc.parameters()))
    for blk in enc.blocks:
        blk.attn.backend = "fold"
    compiled = torch.compile(enc, dynamic=False)
    got = compiled(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    grads = torch.autograd.grad(got.square().sum(), list(enc.parameters()))
    for a, b in zip(grads_want, grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
