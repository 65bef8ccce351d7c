"""The Sam container: the three networks plus the pixel statistics the encoder expects."""

from __future__ import annotations

import torch
from torch import nn

from sam_model.sam1.mask_decoder import MaskDecoder
from sam_model.sam1.prompt_encoder import PromptEncoder

# ImageNet RGB statistics in 0..255 units, as SAM was trained with.
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Holds `image_encoder` (a ViT, or MobileSAM's TinyViT: 1024 in, 256x64x64 out, `img_size`),
    `prompt_encoder`, `mask_decoder`; the predictor drives them."""

    mask_threshold: float = 0.0

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.reset_pixel_stats()

    def reset_pixel_stats(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent pixel_mean/pixel_std buffers.

        They are not in checkpoints, so a model built on the meta device and filled by
        load_state_dict(assign=True) needs them made real here.
        """
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN, device=device).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD, device=device).view(-1, 1, 1), False)
