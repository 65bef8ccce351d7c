"""SAM's ViT image encoder: 1024x1024 normalised image -> 256x64x64 embedding.

Parameter names follow the official checkpoints (`image_encoder.blocks.N.attn.qkv.weight`, ...).
The attention differs from the reference only in how it computes the same function:
scaled_dot_product_attention with the decomposed relative-position bias as its float mask,
queries processed in chunks so no full HW x HW score matrix is ever held, and the qkv/proj
projections run on the real tokens only (window padding is filled with qkv(0)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import LayerNorm2d, MLPBlock

# Query rows per SDPA call in global attention: bounds the bias memory to
# heads x CHUNK x HW floats (12 x 1024 x 4096 x 4 B = 192 MiB for vit_b), a quarter of one
# full score matrix; with a reused buffer 512/1024/2048 rows measured the same speed.
QUERY_CHUNK = 1024


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection; returns channels-last (B, H, W, C)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def relative_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """(size, size, C) table R[i, j] = rel_pos[i - j + size - 1] for equal query/key lengths."""
    if rel_pos.shape[0] != 2 * size - 1:
        raise ValueError(f"relative position table has {rel_pos.shape[0]} rows, expected {2 * size - 1}")
    idx = torch.arange(size, device=rel_pos.device)
    return rel_pos[idx[:, None] - idx[None, :] + (size - 1)]


class Attention(nn.Module):
    """Multi-head self-attention over an (h, w) grid with decomposed relative positions."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, rel_pos_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size[1] - 1, head_dim))

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """qkv (B, h, w, 3C) -> attention output (B, h, w, C), before the output projection."""
        b, h, w, c3 = qkv.shape
        n, heads = h * w, self.num_heads
        q, k, v = qkv.reshape(b, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)
        # Bias rows: rel_h[.., i, kh] = q_i . Rh[qh(i), kh], likewise for width (unscaled q).
        q_grid = q.reshape(b, heads, h, w, -1)
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, relative_table(self.rel_pos_h, h))
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, relative_table(self.rel_pos_w, w))
        rel_h = rel_h.reshape(b, heads, n, h, 1)
        rel_w = rel_w.reshape(b, heads, n, 1, w)
        out = torch.empty_like(q)
        # One bias buffer reused by every chunk: a fresh allocation per chunk costs page faults.
        bias_buf = q.new_empty(b, heads, min(QUERY_CHUNK, n), h, w)
        for s in range(0, n, QUERY_CHUNK):
            e = min(s + QUERY_CHUNK, n)
            bias = torch.add(rel_h[:, :, s:e], rel_w[:, :, s:e], out=bias_buf[:, :, : e - s])
            out[:, :, s:e] = F.scaled_dot_product_attention(
                q[:, :, s:e], k, v, attn_mask=bias.reshape(b, heads, e - s, n)
            )
        return out.transpose(1, 2).reshape(b, h, w, -1)


class Block(nn.Module):
    """Pre-norm transformer block; `window_size` 0 means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        window_size: int,
        input_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        rel_size = input_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, qkv_bias, rel_size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.attn.qkv(self.norm1(x))
        if self.window_size > 0:
            attended = self._windowed(qkv)
        else:
            attended = self.attn.attend(qkv)
        x = x + self.attn.proj(attended)
        return x + self.mlp(self.norm2(x))

    def _windowed(self, qkv: torch.Tensor) -> torch.Tensor:
        """Attention inside non-overlapping windows of the (zero-padded) token grid.

        The reference pads the normalised tokens with zeros before the qkv projection, so
        padded tokens carry qkv(0); filling the padding with it gives the same keys/values
        while projecting only the real tokens.
        """
        b, h, w, c3 = qkv.shape
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        if (hp, wp) != (h, w):
            pad_value = self.attn.qkv(qkv.new_zeros(1, self.attn.qkv.in_features))[0]
            padded = pad_value.expand(b, hp, wp, c3).clone()
            padded[:, :h, :w] = qkv
            qkv = padded
        nh, nw = hp // ws, wp // ws
        windows = qkv.reshape(b, nh, ws, nw, ws, c3).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, c3)
        out = self.attn.attend(windows)
        c = out.shape[-1]
        out = out.reshape(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        return out[:, :h, :w]


class ImageEncoderViT(nn.Module):
    """Patch embedding + absolute positions + ViT blocks + a conv neck to `out_chans`."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        window_size: int = 14,
        global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
