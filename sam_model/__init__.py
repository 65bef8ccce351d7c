"""Segment Anything as a small library: SAM v1, SAM 2.x, MobileSAM and SAM-HQ networks, their
official checkpoints, one stateless predictor interface, automatic mask generation.

Knows nothing of Label Studio, Flask or Redis; `backend` builds on it, never the reverse.
"""

from sam_model.common.decoding import DecodeResult, Predictor
from sam_model.common.embedding import ImageEmbedding
from sam_model.families import FAMILIES, MODEL_TYPES, family_of, identify
from sam_model.loading import load_sam
from sam_model.registry import OFFICIAL_CHECKPOINTS
from sam_model.sam1.build import build_sam
from sam_model.sam1.predictor import SamPredictor

__all__ = [
    "FAMILIES",
    "MODEL_TYPES",
    "OFFICIAL_CHECKPOINTS",
    "DecodeResult",
    "ImageEmbedding",
    "Predictor",
    "SamPredictor",
    "build_sam",
    "family_of",
    "identify",
    "load_sam",
]
