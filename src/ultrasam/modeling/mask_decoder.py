"""SAM's mask decoder: tokens + image embedding -> mask logits and predicted IoU.

Parameter names follow Meta's ``MaskDecoder`` (``transformer.*``, ``iou_token``, ``mask_tokens``,
``output_upscaling.{0,1,3}``, ``output_hypernetworks_mlps.i.layers.j``,
``iou_prediction_head.layers.j``).

Beyond Meta's, ``forward`` decodes prompts of several images in one call: ``image_index`` maps
each prompt to its image, so a training batch of many instances needs no per-image loop.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    def __init__(self, transformer_dim: int, transformer: TwoWayTransformer,
                 num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2,
                               stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim,
                                       self.num_mask_tokens, iou_head_depth)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                sparse_prompt_embeddings: torch.Tensor, dense_prompt_embeddings: torch.Tensor,
                multimask_output: bool, image_index: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode P prompts.

        image_embeddings: B x C x h x w; image_pe: 1 x C x h x w;
        sparse_prompt_embeddings: P x K x C; dense_prompt_embeddings: P x C x h x w;
        image_index: P (long) picking each prompt's image; None means B == 1 (every prompt on
        the one image, Meta's behaviour) or B == P (one prompt per image).
        Returns masks P x M x 4h x 4w and iou_pred P x M, with M = 3 (tokens 1-3) when
        ``multimask_output`` else 1 (token 0).
        """
        masks, iou_pred = self.predict_masks(image_embeddings, image_pe,
                                             sparse_prompt_embeddings, dense_prompt_embeddings,
                                             image_index)
        sel = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, sel], iou_pred[:, sel]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse: torch.Tensor, dense: torch.Tensor,
                      image_index: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """All mask tokens: masks P x (1+n) x 4h x 4w, iou_pred P x (1+n)."""
        p = sparse.shape[0]
        # 1. Output tokens (IoU token, mask tokens) followed by the prompt tokens.
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(p, -1, -1).to(sparse.dtype),
                            sparse], dim=1)
        # 2. Each prompt's image embedding plus its dense (mask) prompt.
        src = self._gather_images(image_embeddings, p, image_index) + dense
        pos_src = image_pe.expand(p, -1, -1, -1)
        b, c, h, w = src.shape
        # 3. Two-way attention, then upscale the image side and apply the hypernetworks.
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1:1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :])
                                for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)

    @staticmethod
    def _gather_images(image_embeddings: torch.Tensor, p: int,
                       image_index: torch.Tensor | None) -> torch.Tensor:
        n = image_embeddings.shape[0]
        if image_index is not None:
            if image_index.shape != (p,):
                raise ValueError(f"image_index must have shape ({p},), got "
                                 f"{tuple(image_index.shape)}")
            return image_embeddings[image_index]
        if n == 1:
            return image_embeddings.expand(p, -1, -1, -1)
        if n == p:
            return image_embeddings
        raise ValueError(f"{n} image embeddings for {p} prompts: pass image_index")
