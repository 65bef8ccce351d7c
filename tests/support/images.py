"""Test images: objects with clear edges to segment, and their PNG bytes as LS would serve them."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def scene(width: int, height: int, blobs: list[tuple[float, float, float]], seed: int = 0) -> np.ndarray:
    """A dark textured background with bright discs at (x%, y%, radius px): objects to segment."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), (35, 45, 60), np.uint8)
    for i, (xp, yp, radius) in enumerate(blobs):
        colour = [(230, 200, 40), (40, 220, 90), (220, 60, 200)][i % 3]
        cv2.circle(image, (round(xp / 100 * width), round(yp / 100 * height)), int(radius), colour, -1)
    noise = rng.integers(0, 12, image.shape, dtype=np.uint8)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    """The image encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour blobs plus noise, HxWx3 uint8: structure for an encoder, detail for the
    antialiased resizes (the parity tests' and the model benchmarks' input)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (1, 3, 5, 7)).astype(np.float32))
    smooth = F.interpolate(coarse, (height, width), mode="bilinear", align_corners=False)[0]
    noisy = smooth.permute(1, 2, 0).numpy() + rng.normal(0, 20, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)
