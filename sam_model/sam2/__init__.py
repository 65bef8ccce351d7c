"""SAM 2.0 / 2.1 image segmentation: Hiera encoder, prompt encoder, mask decoder, predictor.

Loads Meta's official `sam2*_hiera_*.pt` files (image path only) and predicts like
`SAM2ImagePredictor`; embeddings are `sam_model.ImageEmbedding`s.
"""

from .checkpoint import identify, load_sam2
from .config import SAM2_CONFIGS, SAM2_MODEL_TYPES
from .model import Sam2, build_sam2, pack, unpack
from .predictor import Sam2Predictor

__all__ = [
    "SAM2_CONFIGS",
    "SAM2_MODEL_TYPES",
    "Sam2",
    "Sam2Predictor",
    "build_sam2",
    "identify",
    "load_sam2",
    "pack",
    "unpack",
]
