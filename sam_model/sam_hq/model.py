"""HQ-SAM as one module (official parameter names), its builders, and its packed embedding.

An HQ-SAM embedding carries two maps on the same 64x64 grid, packed along channels into the
one features tensor of an `ImageEmbedding`: SAM's 256-channel image embedding, then the
encoder's early features (C channels: the ViT's width, or 160 for TinyViT). Sizes of the
packed (1, 256 + C, 64, 64):

    sam_hq_vit_b     1024 channels  16 MiB fp32,  8 MiB fp16 (the cache's bytes)
    sam_hq_vit_l     1280 channels  20 MiB fp32, 10 MiB fp16
    sam_hq_vit_h     1536 channels  24 MiB fp32, 12 MiB fp16
    sam_hq_vit_tiny   416 channels 6.5 MiB fp32, 3.25 MiB fp16 (Light HQ-SAM, TinyViT-5M)
    sam_hq_tiny       320 channels   5 MiB fp32, 2.5 MiB fp16 (tests only)
"""

from __future__ import annotations

import torch
from torch import nn

from sam_model.mobile_sam.tiny_vit import TINY_VIT_5M
from sam_model.sam1.build import (
    ENCODER_CONFIGS,
    IMAGE_SIZE,
    PROMPT_EMBED_DIM,
    build_image_encoder,
    build_mask_decoder,
    build_prompt_encoder,
)
from sam_model.sam1.sam import Sam
from sam_model.sam_hq.image_encoder import TINY_VIT_EARLY_STAGE, ImageEncoderViTHQ, TinyViTHQ
from sam_model.sam_hq.mask_decoder import MaskDecoderHQ

# The ViT-based types are their SAM v1 encoder size with the HQ decoder.
ENCODER_OF: dict[str, str] = {
    "sam_hq_vit_b": "vit_b",
    "sam_hq_vit_l": "vit_l",
    "sam_hq_vit_h": "vit_h",
    "sam_hq_tiny": "tiny",  # tests only: sam1's 2-block encoder
}
LIGHT = "sam_hq_vit_tiny"  # Light HQ-SAM: MobileSAM's TinyViT-5M encoder
MODEL_TYPES = (*ENCODER_OF, LIGHT)
EMBED_CHANNELS = PROMPT_EMBED_DIM


class SamHq(Sam):
    """An encoder that also yields early features, SAM's prompt encoder and the HQ decoder."""

    image_encoder: ImageEncoderViTHQ | TinyViTHQ
    mask_decoder: MaskDecoderHQ

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (1, 3, 1024, 1024) -> packed features (1, 256 + C, 64, 64), see `pack`."""
        return pack(*self.image_encoder(x))


def pack(image_embed: torch.Tensor, early: torch.Tensor) -> torch.Tensor:
    """(1, 256, 64, 64) embedding and (1, C, 64, 64) early features -> one (1, 256 + C, 64, 64)
    tensor, so an `ImageEmbedding` (and its cache bytes) carries both unchanged."""
    return torch.cat([image_embed, early], dim=1)


def unpack(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack`: (image_embed, early) as views of `features`."""
    return features[:, :EMBED_CHANNELS], features[:, EMBED_CHANNELS:]


def _encoder(model_type: str) -> tuple[nn.Module, int]:
    """`model_type`'s image encoder and the channels of its early features."""
    if model_type == LIGHT:
        # The early stage ends in the merge into the next stage: it has that stage's width.
        early_channels = TINY_VIT_5M.embed_dims[TINY_VIT_EARLY_STAGE + 1]
        return TinyViTHQ(img_size=IMAGE_SIZE, out_chans=PROMPT_EMBED_DIM), early_channels
    try:
        cfg = ENCODER_CONFIGS[ENCODER_OF[model_type]]
    except KeyError:
        raise ValueError(f"unknown SAM-HQ model type {model_type!r}; expected one of {list(MODEL_TYPES)}") from None
    encoder = build_image_encoder(cfg, ImageEncoderViTHQ)
    return encoder, cfg.embed_dim


def build_sam_hq(model_type: str) -> SamHq:
    """A randomly initialised HQ-SAM of `model_type` (use `with torch.device("meta"):` to skip
    allocating weights that a checkpoint will replace)."""
    encoder, early_channels = _encoder(model_type)
    decoder = build_mask_decoder(MaskDecoderHQ, vit_dim=early_channels)
    return SamHq(encoder, build_prompt_encoder(), decoder).eval()
