"""`ToTensor`, `Resize` and `Normalize` on tensors, as torchvision documents them (what
`sam2==1.1.0` puts in front of its encoder; it scripts Resize + Normalize with TorchScript)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ToTensor:
    """HxWxC (or HxW) uint8 array -> CxHxW float32 in [0, 1]."""

    def __call__(self, pic: np.ndarray) -> torch.Tensor:
        pic = np.asarray(pic)
        if pic.ndim == 2:
            pic = pic[:, :, None]
        img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
        if img.dtype == torch.uint8:
            return img.to(dtype=torch.get_default_dtype()).div(255)
        return img


class Resize(nn.Module):
    """Float tensors: bilinear, align_corners=False, antialias=True (torchvision's default)."""

    def __init__(self, size: list[int]) -> None:
        super().__init__()
        self.size = [int(s) for s in size]

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        squeeze = img.dim() == 3
        x = img.unsqueeze(0) if squeeze else img
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x.squeeze(0) if squeeze else x


class Normalize(nn.Module):
    """(x - mean) / std per channel, on a copy (not in place)."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.clone().sub_(mean).div_(std)
