"""The re-associated decoder equals the plain one for SAM's full-size decoder too."""

from __future__ import annotations

import pytest
import torch

from ultrasam.modeling import build_model
from ultrasam.modeling.fast_decoder import fast_decode, prepare_image


@pytest.mark.parametrize("doubled", [False, True])
def test_vit_b_decoder_fast_path_matches(doubled: bool) -> None:
    torch.manual_seed(0)
    model = build_model("vit_b").eval()
    model.mask_decoder.transformer.set_doubled_mlp_residual(doubled)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("image_encoder"):
                p.normal_(0, 0.05)
        emb = torch.randn(1, 256, 64, 64)
        cache = prepare_image(model.mask_decoder, model.prompt_encoder, emb)
        pe = model.prompt_encoder.get_dense_pe()
        for n_prompts, n_points in [(1, 1), (3, 4)]:
            pts = torch.rand(n_prompts, n_points, 2) * 1024
            labels = torch.randint(0, 2, (n_prompts, n_points))
            for boxes in (None, torch.tensor([[100.0, 200, 600, 700]] * n_prompts)):
                for masks in (None, torch.randn(n_prompts, 1, 256, 256)):
                    for multimask in (True, False):
                        sparse, dense = model.prompt_encoder((pts, labels), boxes, masks)
                        ref = model.mask_decoder(emb, pe, sparse, dense, multimask)
                        out = fast_decode(model.mask_decoder, cache, sparse,
                                          dense if masks is not None else None, multimask)
                        assert out[0].shape == ref[0].shape
                        scale = ref[0].abs().max()
                        assert (out[0] - ref[0]).abs().max() <= 1e-4 * scale
                        assert (out[1] - ref[1]).abs().max() <= 1e-5
