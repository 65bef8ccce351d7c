"""`resize` and `to_pil_image` on PIL images, as torchvision documents them."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_pil_image(pic: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(pic))


def resize(img: Image.Image, size: tuple[int, int] | list[int]) -> Image.Image:
    """`size` is (h, w); PIL images are resized with bilinear filtering to (w, h)."""
    height, width = size
    return img.resize((width, height), Image.BILINEAR)
