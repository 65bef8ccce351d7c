"""Automatic mask generation's decoder calls for SAM 2, as `SAM2AutomaticMaskGenerator` makes them.

Points are normalised by the crop's size in float32 and scaled to the 1024 square; the
low-res logits cover the whole (squashed) crop, so they reach its size in one bilinear step.
"""

from __future__ import annotations

import numpy as np
import torch

from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import upscale_logits
from sam_model.sam2.heads import DecoderContext
from sam_model.sam2.model import Sam2, unpack


class Sam2GridDecoder:
    """One crop's embedding, decoded a batch of single-point prompts at a time."""

    def __init__(self, model: Sam2, embedding: ImageEmbedding, dense_pe: torch.Tensor, img_size: int) -> None:
        self.model = model
        self.crop_hw = embedding.original_size
        self.embedding = embedding
        self.dense_pe = dense_pe
        self.img_size = img_size
        self.context: DecoderContext | None = None

    def decode(
        self, points: np.ndarray, min_iou: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Points (B, 2) in crop pixels -> (B*3,) IoU (on CPU), which are above `min_iou` (all when
        None), and the low-res logits (kept, 256, 256) of those only; point-major order."""
        device = self.dense_pe.device
        h, w = self.crop_hw
        xy = torch.as_tensor(points, dtype=torch.float32, device=device)
        xy = torch.stack([xy[:, 0] / w, xy[:, 1] / h], dim=1) * self.img_size
        labels = torch.ones(xy.shape[0], 1, dtype=torch.int, device=device)
        sparse, dense = self.model.sam_prompt_encoder(points=(xy[:, None, :], labels), boxes=None, masks=None)
        decoder = self.model.sam_mask_decoder
        if self.context is None:
            image_embed, s1, s0 = unpack(self.embedding.features.to(device, torch.float32))
            self.context = decoder.prepare(image_embed, s1, s0, self.dense_pe, dense[:1])
        iou, kept, logits = decoder.forward_above(self.context, sparse, min_iou)
        return iou.flatten().float().cpu(), kept.flatten().cpu(), logits.float()

    def upscale(self, logits: torch.Tensor, opencv: bool) -> torch.Tensor:
        """Low-res logits -> (K, H, W) float32 logits at the crop's size, one bilinear step."""
        side = logits.shape[-1]
        return upscale_logits(logits, (side, side), self.crop_hw, side, opencv)

    def low_res_cells(self, logits: torch.Tensor) -> torch.Tensor:
        """All of them: the low-res grid covers the whole squashed crop."""
        return logits
