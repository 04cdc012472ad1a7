"""SAM's prompt encoder: points, boxes and mask logits -> sparse and dense embeddings.

Parameter names follow Meta's ``PromptEncoder`` (``pe_layer.positional_encoding_gaussian_matrix``,
``point_embeddings.{0..3}``, ``not_a_point_embed``, ``mask_downscaling.{0,1,3,4,6}``,
``no_mask_embed``).

Point labels: 1 foreground, 0 background, -1 padding ("not a point"), and — as in Meta's ONNX
decoder — 2 / 3 for a box's top-left / bottom-right corner.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of xy coordinates with a fixed random Gaussian matrix (2 x C/2)."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix",
                             torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        # coords in [0, 1] -> [-1, 1] -> random projection -> sin/cos features.
        coords = 2 * coords - 1
        # Follow the model's dtype (a model cast to bf16/fp16 gets fp32 pixel coordinates).
        coords = coords.to(self.positional_encoding_gaussian_matrix.dtype)
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense positional encoding of an h x w grid of cell centres: C x h x w."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]
                            ) -> torch.Tensor:
        """B x N x 2 pixel xy coordinates in an (h, w) input frame -> B x N x C."""
        coords = coords.clone().float()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords)


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    ``image_embedding_size``: (h, w) of the image embedding grid (64, 64 for SAM).
    ``input_image_size``: (H, W) of the padded model input (1024, 1024 for SAM).
    """

    def __init__(self, embed_dim: int, image_embedding_size: tuple[int, int],
                 input_image_size: tuple[int, int], mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0 negative point, 1 positive point, 2 box top-left, 3 box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image embedding grid: 1 x C x h x w."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool
                     ) -> torch.Tensor:
        """B x N x 2 points (model frame) and B x N labels -> B x (N [+1]) x C tokens.

        ``pad`` appends SAM's "not a point" token (done when no box is given). Training uses
        this directly to decode mixed point and box prompts in Meta's token layout.
        """
        return self._embed_points(points, labels, pad)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool
                      ) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            # SAM appends a "not a point" token when no box is given.
            zeros = torch.zeros((points.shape[0], 1, 2), device=points.device,
                                dtype=points.dtype)
            minus = -torch.ones((labels.shape[0], 1), device=labels.device, dtype=labels.dtype)
            points = torch.cat([points, zeros], dim=1)
            labels = torch.cat([labels, minus], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        # Padding points carry only the not-a-point embedding; the others add their type's.
        emb = torch.where(labels == -1, torch.zeros_like(emb), emb)
        emb = emb + (labels == -1) * self.not_a_point_embed.weight
        for k in range(4):
            emb = emb + (labels == k) * self.point_embeddings[k].weight
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        boxes = boxes + 0.5
        corners = self.pe_layer.forward_with_coords(boxes.reshape(-1, 2, 2),
                                                    self.input_image_size)
        corners[:, 0, :] = corners[:, 0, :] + self.point_embeddings[2].weight
        corners[:, 1, :] = corners[:, 1, :] + self.point_embeddings[3].weight
        return corners

    def forward(self, points: tuple[torch.Tensor, torch.Tensor] | None,
                boxes: torch.Tensor | None, masks: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts, all optional but batch sizes must agree.

        points: (B x N x 2 xy in the input frame, B x N labels); boxes: B x 4 XYXY;
        masks: B x 1 x 4h x 4w logits. Returns sparse B x K x C and dense B x C x h x w.
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        device = self.point_embeddings[0].weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device,
                             dtype=self.no_mask_embed.weight.dtype)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)],
                               dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks.to(self.no_mask_embed.weight.dtype))
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
