"""The mask decoder's two-way transformer: tokens attend to the image and the image to tokens.

A click has ~7 tokens against 4096 image tokens, so the cross-attentions are cheaper with
their image-side projections folded into the token side: with H heads of width d over n
tokens, scores are (q W_k) . x instead of q . (x W_k), costing H*n instead of H*d (= 128)
columns per image token. The first block's image-side projections do not depend on the
prompt at all; `TwoWayTransformer.prepare` computes them once per image (an `ImageContext`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import MLPBlock


@dataclass(frozen=True)
class ImageContext:
    """Prompt-independent tensors of one image (batch 1) for the first two-way block; read-only."""

    keys: torch.Tensor  # (1, T, C) image tokens: embedding + dense prompt
    key_pe: torch.Tensor  # (1, T, C) their positional encoding
    t2i_k: torch.Tensor  # (1, H, T, d) token->image keys, projected
    t2i_v: torch.Tensor  # (1, H, T, d) token->image values, projected
    i2t_q: torch.Tensor  # (1, T, H*d) image->token queries, projected and pre-scaled


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched a @ b where b may be one image's matrix shared by every row of a: one GEMM,
    instead of matmul's broadcast (which copies b once per row)."""
    if b.shape[0] == 1 and a.shape[0] > 1:
        return (a.reshape(-1, a.shape[-1]) @ b[0]).view(*a.shape[:-1], b.shape[-1])
    return a @ b


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by `downsample_rate`."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim // downsample_rate")
        self.head_dim = self.internal_dim // num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, n, d) head outputs -> out_proj of (B, n, H*d)."""
        b, _, n, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, self.internal_dim))

    def folds(self, n_tokens: int) -> bool:
        """Folding the image side into the tokens saves work while heads x tokens < width."""
        return self.num_heads * n_tokens < self.internal_dim

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        )
        return self._merge(out)

    def tokens_to_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Token queries (B, n, C) over image keys/values (1 or B, T, C), projections folded.

        Scores are (q_h W_k,h) . k: the key bias adds q_h . b_k to a whole softmax row, which
        the softmax ignores; values are (P v) W_v,h^T + b_v since each row of P sums to 1.
        """
        b, n, _ = q.shape
        if not self.folds(n):
            return self(q, k.expand(b, -1, -1), v.expand(b, -1, -1))
        h, d = self.num_heads, self.head_dim
        qh = self._heads(self.q_proj(q)) * d**-0.5  # (B, H, n, d)
        qk = (qh @ self.k_proj.weight.view(h, d, -1)).reshape(b, h * n, -1)  # (B, H*n, C)
        p = torch.softmax(_mm(qk, k.transpose(1, 2)), dim=-1)  # (B, H*n, T)
        pv = _mm(p, v).view(b, h, n, -1)  # (B, H, n, C)
        out = pv @ self.v_proj.weight.view(h, d, -1).transpose(1, 2) + self.v_proj.bias.view(h, 1, d)
        return self._merge(out)

    def tokens_to_projected_image(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Token queries (B, n, C) over keys/values already projected into heads (1, H, T, d)."""
        qh = self._heads(self.q_proj(q))
        if qh.shape[0] > 1:
            k, v = k.expand(qh.shape[0], -1, -1, -1), v.expand(qh.shape[0], -1, -1, -1)
        return self._merge(F.scaled_dot_product_attention(qh, k, v))

    def _token_keys(self, k: torch.Tensor, scale: float) -> torch.Tensor:
        """Projected token keys (B, n, C) times `scale` as a block-diagonal (B, H*n, H*d), so one
        matmul gives every head's scores against every token."""
        b, n, _ = k.shape
        h, d = self.num_heads, self.head_dim
        kh = self._heads(self.k_proj(k) * scale)  # (B, H, n, d)
        eye = torch.eye(h, dtype=kh.dtype, device=kh.device)
        return (kh[:, :, :, None, :] * eye[:, None, :, None]).reshape(b, h * n, h * d)

    def _attend_tokens(self, scores: torch.Tensor, v: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + softmax(scores) over each head's tokens, times values through out_proj
        folded into one (H*n, C) matrix (out_proj's bias spread over the H heads' rows).

        `scores` is (B, H*n, T): with the image tokens innermost the softmax over a head's n
        tokens is vectorised along T (over a last axis of ~7 it is ~40x slower on CPU).
        """
        b, n, _ = v.shape
        h, d = self.num_heads, self.head_dim
        p = torch.softmax(scores.view(b, h, n, -1), dim=2).view(b, h * n, -1).transpose(1, 2)
        vh = self._heads(self.v_proj(v))  # (B, H, n, d)
        wo = self.out_proj.weight.view(-1, h, d).permute(1, 2, 0)  # (H, d, C)
        z = (vh @ wo).reshape(b, h * n, -1) + self.out_proj.bias / h
        return torch.baddbmm(residual, p, z) if residual.shape[0] == b else residual + p @ z

    def image_to_tokens(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """residual + attention of image queries (1 or B, T, C) over tokens (B, n, C), with the
        query and output projections folded into the token side."""
        if not self.folds(k.shape[1]):
            return residual + self(q.expand(k.shape[0], -1, -1), k, v)
        keys = self._token_keys(k, self.head_dim**-0.5)  # (B, H*n, H*d)
        m = keys @ self.q_proj.weight  # (B, H*n, C)
        bias = (keys @ self.q_proj.bias).unsqueeze(2)  # (B, H*n, 1)
        return self._attend_tokens(_mm(m, q.transpose(1, 2)) + bias, v, residual)

    def projected_image_to_tokens(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """`image_to_tokens` with the image queries already projected and scaled (1, T, H*d)."""
        return self._attend_tokens(_mm(self._token_keys(k, 1.0), q.transpose(1, 2)), v, residual)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image attention, token MLP, image->token attention."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`context`, if given, holds this block's image-side projections of `keys`."""
        if self.skip_first_layer_pe:
            # The first layer's queries are the prompt tokens themselves (PE already inside).
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        if context is None:
            keys_pe = keys + key_pe
            attn = self.cross_attn_token_to_image.tokens_to_image(q, keys_pe, keys)
        else:
            attn = self.cross_attn_token_to_image.tokens_to_projected_image(q, context.t2i_k, context.t2i_v)
        queries = self.norm2(queries + attn)
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        if context is None:
            keys = self.cross_attn_image_to_token.image_to_tokens(keys_pe, q, queries, keys)
        else:
            keys = self.cross_attn_image_to_token.projected_image_to_tokens(context.i2t_q, q, queries, keys)
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks then a final token->image attention."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=(i == 0)
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def prepare(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageContext:
        """The first block's prompt-independent work for one image (1, C, h, w) and its PE."""
        if image_embedding.shape[0] != 1:
            raise ValueError("prepare takes one image (batch 1)")
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        keys_pe = keys + key_pe
        first = self.layers[0]
        t2i, i2t = first.cross_attn_token_to_image, first.cross_attn_image_to_token
        return ImageContext(
            keys=keys,
            key_pe=key_pe,
            t2i_k=t2i._heads(t2i.k_proj(keys_pe)),
            t2i_v=t2i._heads(t2i.v_proj(keys)),
            i2t_q=i2t.q_proj(keys_pe) * i2t.head_dim**-0.5,
        )

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B or 1, C, h, w), its PE (1, C, h, w), tokens (B, N, C) -> (tokens, image tokens)."""
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        return self._run(point_embedding, keys, key_pe, None)

    def forward_prepared(
        self, context: ImageContext, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` on the image that `context` was prepared from."""
        n = point_embedding.shape[1]
        if not self.layers[0].cross_attn_image_to_token.folds(n):
            # Many tokens: the plain path is cheaper than the folded one.
            return self._run(point_embedding, context.keys, context.key_pe, None)
        return self._run(point_embedding, context.keys, context.key_pe, context)

    def _run(
        self,
        tokens: torch.Tensor,
        keys: torch.Tensor,
        key_pe: torch.Tensor,
        context: ImageContext | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = tokens
        for i, layer in enumerate(self.layers):
            queries, keys = layer(queries, keys, tokens, key_pe, context if i == 0 else None)
        attn = self.final_attn_token_to_image.tokens_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys
