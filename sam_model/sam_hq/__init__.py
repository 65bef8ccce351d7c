"""HQ-SAM (segment-anything-hq): SAM v1's ViT encoder (or MobileSAM's TinyViT) with an HQ mask decoder.

Loads the official `sam_hq_vit_{b,l,h,tiny}.pth` files and predicts like segment-anything-hq's
`SamPredictor`; embeddings are `sam_model.ImageEmbedding`s packing the image embedding and
the encoder's early features (see `model`).
"""

from sam_model.sam_hq.model import ENCODER_OF, LIGHT, MODEL_TYPES, SamHq, build_sam_hq, pack, unpack
from sam_model.sam_hq.predictor import SamHqPredictor

__all__ = ["ENCODER_OF", "LIGHT", "MODEL_TYPES", "SamHq", "SamHqPredictor", "build_sam_hq", "pack", "unpack"]
