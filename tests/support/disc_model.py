"""A constructed SAM whose masks are discs around each prompt point (AMG parity, bench_amg).

Random weights make AMG degenerate (no mask is stable, NMS collapses the rest), so its
filters are checked on this instead: an official `Sam` (test-only oracle) of a zero image
encoder, a prompt "encoder" that passes the point through, and a decoder that draws three
discs per point (one with a hole, one with an island) with spread-out sharpness and
predicted IoU. The official generator runs it as is; ours runs it through
`official_predictor`, i.e. our production predictor and generator code.
"""

from __future__ import annotations

from typing import Any

import torch
from segment_anything.modeling import Sam
from torch import nn

from sam_model.sam1.predictor import SamPredictor
from tests.support.official_adapter import official_predictor


class _ZeroEncoder(nn.Module):
    img_size = 1024

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 256, 64, 64)


class _PointEcho(nn.Module):
    """Prompt encoder whose 'embedding' is the point itself (input-frame pixels)."""

    embed_dim = 256
    image_embedding_size = (64, 64)
    mask_input_size = (256, 256)

    def forward(
        self, points: tuple[torch.Tensor, torch.Tensor], boxes: Any, masks: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return points[0].float(), torch.zeros(points[0].shape[0], 1)

    def get_dense_pe(self) -> torch.Tensor:
        return torch.zeros(1, 256, 64, 64)


def _hash01(x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    return torch.frac(torch.sin(x * 12.9898 + y * 78.233 + 37.719 * k).abs() * 43758.5453)


class _DiscDecoder(nn.Module):
    """Three masks per point: a disc, a larger disc with a small hole, a disc with a small island.

    Logits are signed distances (input pixels) times a per-point sharpness, so stability
    spreads around 0.95; predicted IoU spreads over [0.75, 1]; neighbours overlap (NMS acts).
    """

    def forward(
        self,
        image_embeddings: Any,
        image_pe: Any,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: Any,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = sparse_prompt_embeddings[:, 0, :]
        px, py = p[:, 0, None, None], p[:, 1, None, None]
        c = (torch.arange(256, dtype=torch.float32) + 0.5) * 4
        gx, gy = c[None, None, :], c[None, :, None]

        def dist(dx: float, dy: float) -> torch.Tensor:
            return torch.sqrt((gx - px - dx) ** 2 + (gy - py - dy) ** 2)

        d = dist(0, 0)
        disc = 70 - d
        holed = torch.minimum(110 - d, dist(30, 0) - 9)
        island = torch.maximum(45 - d, 7 - dist(0, 80))
        sharp = torch.stack([0.3 + 4 * _hash01(p[:, 0], p[:, 1], k) for k in range(3)], 1)[..., None, None]
        logits = torch.stack([disc, holed, island], dim=1) * sharp
        iou = torch.stack([0.75 + 0.25 * _hash01(p[:, 1], p[:, 0], k) for k in range(3)], 1)
        return logits, iou


def disc_model() -> tuple[Sam, SamPredictor]:
    """(the official Sam of the disc parts, our predictor on the same parts)."""
    sam = Sam(_ZeroEncoder(), _PointEcho(), _DiscDecoder()).eval()
    return sam, official_predictor(sam, "discs")
