"""Task image reference -> RGB uint8 array, safely. See refs (what), fetch (bytes), decode (pixels)."""

from __future__ import annotations

import numpy as np

from backend.images.decode import decode_image
from backend.images.fetch import ImageFetcher
from backend.images.refs import ForbiddenImage, ImageRef, resolve_image_ref

__all__ = [
    "ForbiddenImage",
    "ImageFetcher",
    "ImageRef",
    "decode_image",
    "load_image",
    "resolve_image_ref",
]


def load_image(
    ref: ImageRef,
    fetcher: ImageFetcher,
    *,
    max_image_pixels: int = 100_000_000,
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """HxWx3 uint8 RGB, EXIF-transposed: shape[:2] is the (height, width) LS reports as original size.

    `expected_size`: that (width, height) when the caller knows it; another size is a 422 found
    from the header, before decoding (backend.images.decode.decode_image)."""
    return decode_image(fetcher.fetch(ref), max_pixels=max_image_pixels, source=ref.source, expected_size=expected_size)
