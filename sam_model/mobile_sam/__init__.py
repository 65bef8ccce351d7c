"""MobileSAM: TinyViT-5M image encoder with SAM v1's prompt encoder, mask decoder and predictor.

Loads the official `mobile_sam.pt` (through `sam_model.loading.load_sam`) and predicts like
MobileSAM's `SamPredictor`.
"""

from sam_model.mobile_sam.build import MODEL_TYPE, build_mobile_sam
from sam_model.mobile_sam.family import FAMILY
from sam_model.mobile_sam.tiny_vit import TINY_VIT_5M, TinyViT, TinyViTConfig

__all__ = ["FAMILY", "MODEL_TYPE", "TINY_VIT_5M", "TinyViT", "TinyViTConfig", "build_mobile_sam"]
