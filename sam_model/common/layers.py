"""Small building blocks shared by every family's encoders, prompt encoders and decoders."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn


class MLPBlock(nn.Module):
    """Two linear layers with an activation between; names `lin1`/`lin2` match the checkpoints."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor (SAM's necks and upscalers use it)."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last view lets the fused layer_norm kernel do the work in one pass.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class MLP(nn.Module):
    """`num_layers` linear layers with `act` between (hypernetworks, IoU heads, SAM 2's
    encoder MLPs); names `layers.N` match the checkpoints."""

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, act: type[nn.Module] = nn.ReLU
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


def transposed_conv_matrix(conv: nn.ConvTranspose2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A kernel-2 stride-2 transposed conv as (C_in, 4*C_out) weights and bias, columns ordered
    (dy, dx, c_out): each input pixel maps alone onto its own 2x2 output block."""
    c_in, c_out = conv.weight.shape[:2]
    return conv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out), conv.bias.repeat(4)
