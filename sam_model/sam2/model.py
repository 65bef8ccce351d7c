"""The image path of SAM 2 as one module, with the official checkpoints' parameter names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_model.sam1.prompt_encoder import PromptEncoder
from sam_model.sam2.config import IMAGE_SIZE, PROMPT_EMBED_DIM, SAM2_CONFIGS, Sam2Config
from sam_model.sam2.heads import MaskDecoder
from sam_model.sam2.hiera import ImageEncoder

# Channels of the packed features: image embedding, then the stride-8 and stride-4 maps
# folded into the 64x64 grid with pixel_unshuffle (64*2*2 and 32*4*4 channels).
EMBED_CHANNELS = PROMPT_EMBED_DIM
PACKED_CHANNELS = PROMPT_EMBED_DIM * 4


class Sam2(nn.Module):
    """Encoder, prompt encoder and mask decoder of SAM2Base (its video modules left out)."""

    def __init__(self, cfg: Sam2Config) -> None:
        super().__init__()
        self.config = cfg
        dim, grid = PROMPT_EMBED_DIM, IMAGE_SIZE // 16
        self.image_encoder = ImageEncoder(cfg.trunk, dim)
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
            mask_in_chans=16,
        )
        self.sam_mask_decoder = MaskDecoder(dim)
        # Added to the image embedding of a frame without memory, i.e. every still image.
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised (1, 3, 1024, 1024) -> packed features (1, 1024, 64, 64), see `pack`."""
        s0, s1, top = self.image_encoder(x)
        decoder = self.sam_mask_decoder
        embed = top + self.no_mem_embed.view(1, -1, 1, 1)
        return pack(embed, decoder.conv_s1(s1), decoder.conv_s0(s0))


def pack(image_embed: torch.Tensor, s1: torch.Tensor, s0: torch.Tensor) -> torch.Tensor:
    """(1,256,64,64), (1,64,128,128), (1,32,256,256) -> one (1,1024,64,64) tensor, losslessly,
    so an `ImageEmbedding` (and its cache bytes) carries all three levels unchanged."""
    return torch.cat([image_embed, F.pixel_unshuffle(s1, 2), F.pixel_unshuffle(s0, 4)], dim=1)


def unpack(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `pack`: (image_embed, s1, s0)."""
    e = EMBED_CHANNELS
    return features[:, :e], F.pixel_shuffle(features[:, e : 2 * e], 2), F.pixel_shuffle(features[:, 2 * e :], 4)


def build_sam2(model_type: str) -> Sam2:
    """A randomly initialised SAM 2 image model (use `with torch.device("meta"):` before loading)."""
    try:
        cfg = SAM2_CONFIGS[model_type]
    except KeyError:
        raise ValueError(f"unknown SAM 2 model type {model_type!r}; expected one of {sorted(SAM2_CONFIGS)}") from None
    return Sam2(cfg).eval()
