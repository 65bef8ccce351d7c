"""Automatic mask generation's decoder calls for HQ-SAM, as its `SamAutomaticMaskGenerator` makes them.

Like SAM v1's (same prompt scaling, padding and upscaling), except that each grid point gives
ONE mask: SAM's best candidate plus the HQ mask (the reference generator's default), so the
generator sees a third as many candidates per point.
"""

from __future__ import annotations

import numpy as np
import torch

from sam_model.common.embedding import ImageEmbedding
from sam_model.common.transforms import scale_coords
from sam_model.sam1.grid_decoder import Sam1GridDecoder
from sam_model.sam_hq.mask_decoder import HqContext
from sam_model.sam_hq.model import SamHq, unpack


class SamHqGridDecoder(Sam1GridDecoder):
    """One crop's embedding, decoded a batch of single-point prompts at a time."""

    def __init__(
        self, sam: SamHq, embedding: ImageEmbedding, features: torch.Tensor, dense_pe: torch.Tensor, hq_token_only: bool
    ) -> None:
        super().__init__(sam, embedding, features, dense_pe)
        self.hq_token_only = hq_token_only
        self.hq_context: HqContext | None = None

    def decode(
        self, points: np.ndarray, min_iou: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Points (B, 2) in crop pixels -> (B,) IoU (on CPU), which of them are above `min_iou`
        (all when None), and the low-res logits (kept, 256, 256) of those only."""
        scaled = scale_coords(points, self.crop_hw, self.input_size)
        coords = torch.as_tensor(scaled, device=self.features.device)[:, None, :]
        labels = torch.ones(coords.shape[0], 1, dtype=torch.int, device=self.features.device)
        sparse, dense = self.sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        decoder = self.sam.mask_decoder
        if self.hq_context is None:
            image_embed, early = unpack(self.features)
            self.hq_context = decoder.prepare(image_embed, early, self.dense_pe, dense[:1])
        iou, kept, logits = decoder.forward_prepared_above(self.hq_context, sparse, True, min_iou, self.hq_token_only)
        return iou.flatten().float().cpu(), kept.flatten().cpu(), logits.float()
