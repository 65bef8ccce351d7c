"""MobileSAM's image encoder: TinyViT-5M on a 1024x1024 normalised image -> 256x64x64 embedding.

Parameter names follow the official `mobile_sam.pt` (`image_encoder.layers.2.blocks.0.attn.qkv.weight`,
`...local_conv.bn.running_var`, ...), so the file loads strictly; the unused ImageNet head
(`norm_head`, `head`) is kept only for that. The function is the reference's; the computation
differs in how it gets there:

- each conv+BatchNorm pair runs as one convolution whose weights are folded per call (the
  weights are tiny next to the activations), the keys staying as in the file;
- tokens stay channels-last (B, H, W, C) throughout, so the depthwise and 1x1 convolutions run
  on a channels_last view with no transposes between stages;
- window attention is `F.scaled_dot_product_attention` (its fused CPU kernel) with the learned
  bias as its float mask, the bias index computed from the window size instead of stored;
- activations and residual adds are applied in place to fresh intermediates: on CPU a new
  256x256x256 tensor costs more in page faults than the GELU it holds. No module modifies its
  input, so a stage's output may be kept (Light HQ-SAM keeps one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.common.layers import LayerNorm2d

MLP_RATIO = 4
MBCONV_EXPAND = 4
LOCAL_CONV_SIZE = 3


@dataclass(frozen=True)
class TinyViTConfig:
    """Per stage: width, block count, heads and attention window (stage 0 is convolutional)."""

    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_sizes: tuple[int, ...]


# MobileSAM's encoder: TinyViT-5M.
TINY_VIT_5M = TinyViTConfig((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7))


def gelu_(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, in place on a fresh intermediate."""
    return torch.ops.aten.gelu_(x)


class ConvBN(nn.Module):
    """A bias-free convolution and an (inference-mode) BatchNorm, named `c` and `bn` as in the files."""

    def __init__(self, in_chans: int, out_chans: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.c = nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # BN with running statistics is affine per channel: fold it into the conv (one pass
        # over the activations instead of two).
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.c.weight * scale[:, None, None, None]
        bias = bn.bias - bn.running_mean * scale
        return F.conv2d(x, weight, bias, self.c.stride, self.c.padding, groups=self.c.groups)


class PatchEmbed(nn.Module):
    """Two stride-2 3x3 conv+BN with GELU between: image -> quarter-resolution features."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2), nn.GELU(), ConvBN(embed_dim // 2, embed_dim, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # seq[1] is the GELU, applied in place here.
        return self.seq[2](gelu_(self.seq[0](x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual add, GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = dim * MBCONV_EXPAND
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(gelu_(self.conv2(gelu_(self.conv1(x)))))
        return gelu_(y.add_(x))


class PatchMerging(nn.Module):
    """1x1 conv, strided depthwise 3x3, 1x1 conv (GELU after the first two): NCHW in, (B, H, W, C) out."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(gelu_(self.conv2(gelu_(self.conv1(x)))))
        return x.permute(0, 2, 3, 1)


class ConvLayer(nn.Module):
    """TinyViT's first stage: MBConv blocks, then a merge into the first attention stage."""

    def __init__(self, dim: int, depth: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(dim) for _ in range(depth))
        self.downsample = PatchMerging(dim, out_dim, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x)


def bias_index(window: int, device: torch.device) -> torch.Tensor:
    """(N, N) index into a head's bias row, N = window**2: the offset (|dy|, |dx|) of two cells.

    The reference numbers offsets in order of first appearance over (query, key) pairs; the
    first query, cell (0, 0), meets every offset, row-major, so (dy, dx) is dy * window + dx.
    """
    cells = torch.arange(window * window, device=device)
    y, x = cells // window, cells % window
    return (y[:, None] - y[None, :]).abs() * window + (x[:, None] - x[None, :]).abs()


class Attention(nn.Module):
    """Multi-head attention in a window with a learned bias per head and cell offset.

    qkv's output is laid out per head as [q, k, v], each `dim // num_heads` wide.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Token windows (Bw, N, C), N = window**2 -> attention output (Bw, N, C)."""
        bw, n, c = windows.shape
        heads = self.num_heads
        qkv = self.qkv(self.norm(windows)).view(bw, n, heads, 3, c // heads)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        # A 4-D mask (broadcast over windows) keeps SDPA on its fused CPU kernel; 3-D does not.
        bias = self.attention_biases[:, bias_index(self.window, windows.device)][None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class TinyViTBlock(nn.Module):
    """Window attention (residual), a depthwise 3x3 conv+BN, an MLP (residual); on (B, H, W, C)."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.attn = Attention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, LOCAL_CONV_SIZE, groups=dim)
        self.mlp = Mlp(dim, dim * MLP_RATIO)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._windowed_attention(x)
        x = self.local_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.mlp(x)

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention inside non-overlapping windows of the grid, zero-padded bottom/right.

        As in the reference, padded tokens are normalised and projected like real ones and take
        part as keys (nothing is masked). Padding and partitioning the C-wide tokens before the
        qkv projection moves a third of the bytes that partitioning its 3C-wide output would.
        """
        b, h, w, c = x.shape
        ws = self.attn.window
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        nh, nw = hp // ws, wp // ws
        windows = x.view(b, nh, ws, nw, ws, c).transpose(2, 3).reshape(b * nh * nw, ws * ws, c)
        out = self.attn(windows)
        out = out.view(b, nh, nw, ws, ws, c).transpose(2, 3).reshape(b, hp, wp, c)
        return out[:, :h, :w]


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU and its residual (`norm`, `fc1`, `fc2` as in the files)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + MLP(x): the residual is added in place into the fresh output."""
        return self.fc2(gelu_(self.fc1(self.norm(x)))).add_(x)


class BasicLayer(nn.Module):
    """An attention stage: TinyViT blocks, then (except for the last stage) a merge."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, merge: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TinyViTBlock(dim, num_heads, window) for _ in range(depth))
        self.downsample = PatchMerging(dim, *merge) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        return x


class TinyViT(nn.Module):
    """Stem, one convolutional stage and three attention stages, then SAM's conv neck.

    Input (B, 3, img_size, img_size), output (B, out_chans, img_size / 16, img_size / 16): the
    stem and stage 0 reduce by 4, each merge by 2 except the one into the last stage, which
    MobileSAM keeps at the 64x64 grid SAM's decoder expects.
    """

    def __init__(
        self,
        config: TinyViTConfig = TINY_VIT_5M,
        img_size: int = 1024,
        in_chans: int = 3,
        out_chans: int = 256,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        embed_dims, depths = config.embed_dims, config.depths
        num_heads, window_sizes = config.num_heads, config.window_sizes
        last = len(embed_dims) - 1
        # The merge after stage i: to stage i+1's width, stride 2 except into the last stage.
        merges = [(embed_dims[i + 1], 1 if i + 1 == last else 2) for i in range(last)]
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        self.layers = nn.ModuleList([ConvLayer(embed_dims[0], depths[0], *merges[0])])
        self.layers.extend(
            BasicLayer(embed_dims[i], depths[i], num_heads[i], window_sizes[i], merges[i] if i < last else None)
            for i in range(1, last + 1)
        )
        # The ImageNet classifier TinyViT was distilled with: in the files, never run.
        self.norm_head = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last from the start: every later conv reads (B, H, W, C) tokens as NCHW views.
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2))
