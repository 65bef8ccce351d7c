"""The layer stack SAM 2 uses everywhere (encoder MLPs, decoder MLPs, hypernetworks, heads)."""

from __future__ import annotations

import itertools

import torch
from torch import nn


class MLP(nn.Module):
    """`num_layers` linear layers with `act` between; names `layers.N` match the checkpoints."""

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
