"""`resize` and `to_pil_image` on PIL images, and the `InterpolationMode` enum, as torchvision
documents them."""

from __future__ import annotations

import enum

import numpy as np
from PIL import Image


class InterpolationMode(enum.Enum):
    """Interpolation names (`timm.data` maps them to PIL's at import)."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def to_pil_image(pic: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(pic))


def resize(img: Image.Image, size: tuple[int, int] | list[int]) -> Image.Image:
    """`size` is (h, w); PIL images are resized with bilinear filtering to (w, h)."""
    height, width = size
    return img.resize((width, height), Image.BILINEAR)
