"""SAM 2.0 / 2.1 image segmentation: Hiera encoder, prompt encoder, mask decoder, predictor.

Loads Meta's official `sam2*_hiera_*.pt` files (image path only, through
`sam_model.loading.load_sam`) and predicts like `SAM2ImagePredictor`.
"""

from sam_model.sam2.config import SAM2_CONFIGS, SAM2_MODEL_TYPES
from sam_model.sam2.model import Sam2, build_sam2, pack, unpack
from sam_model.sam2.predictor import Sam2Predictor

__all__ = ["SAM2_CONFIGS", "SAM2_MODEL_TYPES", "Sam2", "Sam2Predictor", "build_sam2", "pack", "unpack"]
