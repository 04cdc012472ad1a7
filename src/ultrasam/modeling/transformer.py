"""SAM's two-way transformer: prompt tokens and image embedding attend to each other.

Parameter names follow Meta's ``TwoWayTransformer`` (``layers.i.{self_attn, norm1,
cross_attn_token_to_image, norm2, mlp.lin1, mlp.lin2, norm3, norm4, cross_attn_image_to_token}``,
``final_attn_token_to_image``, ``norm_final_attn``; attention modules have ``q_proj``,
``k_proj``, ``v_proj``, ``out_proj``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock


class Attention(nn.Module):
    """Multi-head attention with an optional down-projected internal width.

    q: B x Nq x C, k and v: B x Nk x C -> B x Nq x C.
    """

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q_proj(q))
        k = self._heads(self.k_proj(k))
        v = self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, token->image, MLP on tokens, image->token cross-attention.

    ``doubled_mlp_residual`` reproduces UltraSam's decoder, which adds the tokens twice around
    the MLP (``norm3(2 * q + mlp(q))``); Meta's SAM adds them once.
    """

    def __init__(self, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe
        self.doubled_mlp_residual = False

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
                key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # 1. Self-attention of the tokens (the first layer sees no positional encoding).
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)
        # 2. Tokens attend to the image.
        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))
        # 3. MLP on the tokens.
        residual = 2 * queries if self.doubled_mlp_residual else queries
        queries = self.norm3(residual + self.mlp(queries))
        # 4. The image attends to the tokens.
        q = queries + query_pe
        k = keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """image_embedding B x C x h x w, image_pe B x C x h x w, point_embedding B x N x C
    -> (tokens B x N x C, image B x hw x C)."""

    def __init__(self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int,
                 attention_downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(embedding_dim, num_heads, mlp_dim, attention_downsample_rate,
                                 skip_first_layer_pe=(i == 0))
            for i in range(depth))
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads,
                                                   attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def set_doubled_mlp_residual(self, enabled: bool) -> None:
        for layer in self.layers:
            layer.doubled_mlp_residual = enabled

    def forward(self, image_embedding: torch.Tensor, image_pe: torch.Tensor,
                point_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=point_embedding, key_pe=key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
