"""Builders for the official SAM v1 sizes and a tiny test configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sam_model.sam1.image_encoder import ImageEncoderViT
from sam_model.sam1.mask_decoder import MaskDecoder
from sam_model.sam1.prompt_encoder import PromptEncoder
from sam_model.sam1.sam import Sam
from sam_model.sam1.transformer import TwoWayTransformer

IMAGE_SIZE = 1024
PATCH_SIZE = 16
PROMPT_EMBED_DIM = 256


@dataclass(frozen=True)
class EncoderConfig:
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]


ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "vit_b": EncoderConfig(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderConfig(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderConfig(1280, 32, 16, (7, 15, 23, 31)),
    # Tests only: one windowed and one global block, still 256x64x64 out, real decoder.
    "tiny": EncoderConfig(64, 2, 2, (1,)),
}


def build_sam(model_type: str) -> Sam:
    """A randomly initialised Sam of `model_type` (use `with torch.device("meta"):` to skip
    allocating weights that a checkpoint will replace)."""
    try:
        cfg = ENCODER_CONFIGS[model_type]
    except KeyError:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(ENCODER_CONFIGS)}") from None
    encoder = build_image_encoder(cfg)
    return Sam(encoder, build_prompt_encoder(), build_mask_decoder()).eval()


def build_image_encoder(cfg: EncoderConfig, encoder: type[ImageEncoderViT] = ImageEncoderViT) -> ImageEncoderViT:
    """SAM v1's ViT of one size; SAM-HQ passes its subclass that also returns early features."""
    return encoder(
        img_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=4.0,
        out_chans=PROMPT_EMBED_DIM,
        qkv_bias=True,
        window_size=14,
        global_attn_indexes=cfg.global_attn_indexes,
    )


def build_prompt_encoder() -> PromptEncoder:
    """SAM v1's prompt encoder, shared unchanged by MobileSAM and SAM-HQ."""
    grid = IMAGE_SIZE // PATCH_SIZE
    return PromptEncoder(
        embed_dim=PROMPT_EMBED_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )


def build_mask_decoder(decoder: type[MaskDecoder] = MaskDecoder, **extra: Any) -> MaskDecoder:
    """SAM v1's mask decoder (MobileSAM's too); SAM-HQ passes its subclass and its extra arguments."""
    return decoder(
        transformer_dim=PROMPT_EMBED_DIM,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, num_heads=8, mlp_dim=2048),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        **extra,
    )
