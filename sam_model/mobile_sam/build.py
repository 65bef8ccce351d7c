"""MobileSAM as the official `build_sam_vit_t` lays it out: TinyViT-5M with SAM v1's prompt
encoder and mask decoder, unchanged, under the same module names."""

from __future__ import annotations

from sam_model.mobile_sam.tiny_vit import TinyViT
from sam_model.sam1.build import IMAGE_SIZE, PROMPT_EMBED_DIM, build_mask_decoder, build_prompt_encoder
from sam_model.sam1.sam import Sam

MODEL_TYPE = "mobile_sam"


def build_mobile_sam(model_type: str = MODEL_TYPE) -> Sam:
    """A randomly initialised MobileSAM (use `with torch.device("meta"):` to skip allocating
    weights that a checkpoint will replace)."""
    if model_type != MODEL_TYPE:
        raise ValueError(f"unknown model_type {model_type!r}; expected {MODEL_TYPE!r}")
    encoder = TinyViT(img_size=IMAGE_SIZE, out_chans=PROMPT_EMBED_DIM)
    return Sam(encoder, build_prompt_encoder(), build_mask_decoder()).eval()
