"""The image encoders HQ-SAM builds on, also returning the early features its decoder fuses.

SAM v1's ViT: the tokens after the first global-attention block (the official
`interm_embeddings[0]`), local detail the neck's 256 channels have already blurred. Light
HQ-SAM's TinyViT-5M (MobileSAM's encoder): the output of its second stage, 160 channels,
already on the 64x64 grid. Same parameters and names as the encoders they extend.
"""

from __future__ import annotations

import torch

from sam_model.mobile_sam.tiny_vit import TinyViT
from sam_model.sam1.image_encoder import ImageEncoderViT

# TinyViT stage whose output Light HQ-SAM fuses.
TINY_VIT_EARLY_STAGE = 1


class ImageEncoderViTHQ(ImageEncoderViT):
    """`ImageEncoderViT` whose forward also yields the first global block's output."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (1, 3, 1024, 1024) -> (embedding (1, 256, 64, 64), early (1, C, 64, 64) NCHW)."""
        x = self.patch_embed(x) + self.pos_embed
        early = None
        for block in self.blocks:
            x = block(x)
            if early is None and block.window_size == 0:
                early = x
        if early is None:
            raise ValueError("HQ-SAM needs an encoder with at least one global-attention block")
        return self.neck(x.permute(0, 3, 1, 2)), early.permute(0, 3, 1, 2)


class TinyViTHQ(TinyViT):
    """MobileSAM's `TinyViT` whose forward also yields its second stage's output."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (1, 3, 1024, 1024) -> (embedding (1, 256, 64, 64), early (1, 160, 64, 64) NCHW)."""
        x = self.patch_embed(x.contiguous(memory_format=torch.channels_last))
        for layer in self.layers[: TINY_VIT_EARLY_STAGE + 1]:
            x = layer(x)
        early = x
        for layer in self.layers[TINY_VIT_EARLY_STAGE + 1 :]:
            x = layer(x)
        return self.neck(x.permute(0, 3, 1, 2)), early.permute(0, 3, 1, 2)
