"""SAM 2's image encoder: a Hiera trunk (windowed attention, pooled queries at stage changes)
and an FPN neck, 1024x1024 normalised image -> features at strides 4, 8 and 16.

Parameter names follow the official checkpoints (`image_encoder.trunk.blocks.N.attn.qkv`,
`image_encoder.neck.convs.N.conv`, ...). The neck's sine position encodings feed only the
video memory, so they are not computed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import MLP
from sam_model.sam2.config import HieraConfig

Q_STRIDE = 2  # every stage change halves the grid by max-pooling the queries


def _pad_to(n: int, window: int) -> int:
    return n + (window - n % window) % window


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nWindows, window, window, C), zero-padding H and W up to multiples."""
    b, h, w, c = x.shape
    hp, wp = _pad_to(h, window), _pad_to(w, window)
    if (hp, wp) != (h, w):
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def window_unpartition(windows: torch.Tensor, window: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `window_partition` for an unpadded grid of `size` (H, W): drops the padding."""
    h, w = size
    hp, wp = _pad_to(h, window), _pad_to(w, window)
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


def _pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool of a channels-last (B, H, W, C) grid."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), Q_STRIDE).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over a (window of the) grid; with `pool_q` the queries are 2x2 max-pooled,
    so the output grid is half the input's on each side."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, pool_q: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pool_q = pool_q
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.pool_q:
            q = _pool(q.reshape(b, h, w, -1))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm attention + MLP block; a stage's first block widens, pools and projects the skip."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, window_size: int, pool_q: bool) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.pool_q = pool_q
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, pool_q)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, 4 * dim_out, dim_out, 2, act=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool_q:
                shortcut = _pool(shortcut)
        window = self.window_size
        if window:
            x = window_partition(x, window)
        x = self.attn(x)
        if window:
            # Pooled queries shrink each window by the stride: unpartition at the pooled size.
            out_window = window // Q_STRIDE if self.pool_q else window
            x = window_unpartition(x, out_window, shortcut.shape[1:3])
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Overlapping 7x7 stride-4 patch projection; returns channels-last (B, H, W, C)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Contiguous channels-last from here on: every later norm and linear reads it in place.
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class Hiera(nn.Module):
    """The trunk: four stages; returns each stage's output (NCHW), highest resolution first."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, cfg.embed_dim, cfg.window_spec[0], cfg.window_spec[0]))
        ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        self.stage_ends = tuple(ends)
        blocks = []
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            # A stage's first block still attends in the previous stage's window size
            # (the official schedule lags by one block), then pools to the new stage.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            first_of_stage = i - 1 in ends[:-1]
            dim_out = dim
            if first_of_stage:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            blocks.append(MultiScaleBlock(dim, dim_out, heads, window, pool_q=first_of_stage))
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)

    def pos_embed_at(self, h: int, w: int) -> torch.Tensor:
        """Background embedding resized (bicubic) to the grid plus the tiled window embedding,
        channels-last (1, h, w, C)."""
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        window = self.pos_embed_window
        pos = pos + window.tile(1, 1, h // window.shape[2], w // window.shape[3])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.pos_embed_at(*x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


class FpnNeck(nn.Module):
    """1x1 lateral convs to 256 channels; the two coarsest levels also add the coarser level,
    nearest-upsampled (top-down). Output levels, highest resolution first."""

    def __init__(self, stage_dims: tuple[int, ...], d_model: int, top_down_levels: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        # convs[0] reads the coarsest stage, as in the official checkpoints.
        self.convs = nn.ModuleList(_lateral(dim, d_model) for dim in reversed(stage_dims))
        self.top_down_levels = top_down_levels

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(xs) - 1
        coarse_first: list[torch.Tensor] = []
        for i in range(n, -1, -1):
            level = self.convs[n - i](xs[i])
            if i in self.top_down_levels and coarse_first:
                level = level + F.interpolate(coarse_first[-1].float(), scale_factor=2.0, mode="nearest")
            coarse_first.append(level)
        return coarse_first[::-1]


def _lateral(dim: int, d_model: int) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))
    return seq


class ImageEncoder(nn.Module):
    """Trunk + neck; the coarsest (stride 32) level feeds the top-down path and is then dropped."""

    def __init__(self, cfg: HieraConfig, d_model: int) -> None:
        super().__init__()
        self.trunk = Hiera(cfg)
        self.neck = FpnNeck(cfg.stage_dims, d_model)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 1024, 1024) -> [stride-4, stride-8, stride-16] feature maps of d_model channels."""
        return self.neck(self.trunk(x))[:-1]
