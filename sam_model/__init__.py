"""Segment Anything (SAM v1) as a small library: networks, checkpoints, predictor.

Knows nothing of Label Studio, Flask or Redis; `backend` builds on it, never the reverse.
"""

from .build import ENCODER_CONFIGS, build_sam
from .checkpoint import load_sam
from .embedding import ImageEmbedding
from .predictor import DecodeResult, SamPredictor
from .registry import OFFICIAL_CHECKPOINTS

MODEL_TYPES: tuple[str, ...] = tuple(ENCODER_CONFIGS)

__all__ = [
    "MODEL_TYPES",
    "OFFICIAL_CHECKPOINTS",
    "DecodeResult",
    "ImageEmbedding",
    "SamPredictor",
    "build_sam",
    "load_sam",
]
