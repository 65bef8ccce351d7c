"""Comparing masks: overlap, and the mask LS would paint from a brush region we answered."""

from __future__ import annotations

import numpy as np
from label_studio_sdk.converter.brush import decode_rle


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks are the same mask (1.0)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def brush_mask(region: dict) -> np.ndarray:
    """The mask LS's frontend would paint: the SDK's reference decoder (not ours), alpha channel non-zero."""
    flat = decode_rle(region["value"]["rle"])
    return flat.reshape(region["original_height"], region["original_width"], 4)[:, :, 3] > 0
