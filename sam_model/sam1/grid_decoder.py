"""Automatic mask generation's decoder calls for SAM v1-style models (v1, MobileSAM).

Every batch of grid points shares the crop's image, so the decoder's prompt-independent
work (`prepare`) is done once, by the first batch, and reused by the others.
"""

from __future__ import annotations

import numpy as np
import torch

from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import scale_coords, upscale_logits
from sam_model.sam1.sam import Sam
from sam_model.sam1.transformer import ImageContext


class Sam1GridDecoder:
    """One crop's embedding, decoded a batch of single-point prompts at a time."""

    def __init__(self, sam: Sam, embedding: ImageEmbedding, features: torch.Tensor, dense_pe: torch.Tensor) -> None:
        self.sam = sam
        self.crop_hw = embedding.original_size
        self.input_size = embedding.input_size
        self.features = features
        self.dense_pe = dense_pe
        self.square = sam.image_encoder.img_size
        self.context: ImageContext | None = None

    def decode(
        self, points: np.ndarray, min_iou: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Points (B, 2) in crop pixels -> (B*3,) IoU (on CPU), which of them are above `min_iou`
        (all when None), and the low-res logits (kept, 256, 256) of those only (on the model's
        device); point-major order."""
        scaled = scale_coords(points, self.crop_hw, self.input_size)
        coords = torch.as_tensor(scaled, device=self.features.device)[:, None, :]
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=self.features.device)
        sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        decoder = self.sam.mask_decoder
        if self.context is None:
            self.context = decoder.prepare(self.features, self.dense_pe, dense[:1])
        iou, kept, logits = decoder.forward_prepared_above(self.context, sparse, True, min_iou)
        return iou.flatten().float().cpu(), kept.flatten().cpu(), logits.float()

    def upscale(self, logits: torch.Tensor, opencv: bool) -> torch.Tensor:
        """Low-res logits -> (K, H, W) float32 logits at the crop's size (the predictor's path)."""
        return upscale_logits(logits, self.input_size, self.crop_hw, self.square, opencv)

    def low_res_cells(self, logits: torch.Tensor) -> torch.Tensor:
        """The low-res logits' cells that cover the image (the rest is padding)."""
        scale = logits.shape[-1] / self.square
        h, w = max(1, round(self.input_size[0] * scale)), max(1, round(self.input_size[1] * scale))
        return logits[..., :h, :w]
