"""Decode image bytes into what the encoder takes: an HxWx3 uint8 RGB array, as LS displays it.

Orientation: browsers apply a JPEG's EXIF orientation when they draw it (CSS
`image-orientation: from-image` is the default since Chrome 81, Firefox 77, Safari 13.1, and it
applies to canvas drawImage too), and an <img>'s naturalWidth/naturalHeight are the oriented
size. Label Studio draws the image that way and its percent coordinates and
original_width/original_height refer to that displayed image. So we apply the EXIF transpose
before anything else: the returned array's shape is the size LS reports, and masks line up.

The pixel limit is checked on the header size, before any pixel is decoded, so a 30000x30000
PNG of a few hundred bytes costs nothing.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from backend.errors import PayloadTooLarge, Unprocessable, UnsupportedMedia

# What browsers render (TIFF: Safari only; JPEG covers MPO). Nothing that hands work to external
# programs (EPS) or that browsers never show. AVIF only where this Pillow build has it.
Image.init()
BROWSER_FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "ICO", "TIFF") if f in Image.OPEN)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


def _signature(data: bytes) -> str:
    """The format a file claims by its first bytes, so a corrupt PNG is not called 'not an image'."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), "")


def _raise_pillow_limit(max_pixels: int) -> None:
    """Pillow refuses (or warns) above Image.MAX_IMAGE_PIXELS; we enforce our own limit
    explicitly, so Pillow's process-wide one is only ever raised to ours, never lowered or disabled."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _refuse_markup(data: bytes, source: str) -> None:
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head.startswith(b"<"):
        return
    if b"<svg" in data[:4096].lower():
        raise UnsupportedMedia(
            f"{source} is an SVG (vector) image; only raster images can be segmented",
            "Convert the image to PNG or JPEG",
        )
    raise UnsupportedMedia(
        f"{source} returned an HTML/XML page instead of an image",
        "Point the task at the image file itself; if this is the Label Studio login page, "
        "set LABEL_STUDIO_API_KEY to a valid token",
    )


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB: 16-bit keeps its high byte (what browsers show), transparency over white."""
    if img.mode in _SIXTEEN_BIT:
        gray = (np.clip(np.asarray(img), 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        img = canvas
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def decode_image(data: bytes, *, max_pixels: int = 100_000_000, source: str = "the image data") -> np.ndarray:
    """Decode, EXIF-transpose and convert to RGB uint8; array.shape[:2] is LS's (height, width).

    Raises PayloadTooLarge (413) above `max_pixels`, UnsupportedMedia (415) for non-images,
    SVG and HTML, Unprocessable (422) for truncated or corrupt files; messages name `source`.
    """
    _refuse_markup(data, source)
    _raise_pillow_limit(max_pixels)
    too_many = PayloadTooLarge(
        f"{source} has more than MAX_IMAGE_PIXELS={max_pixels} pixels", "Downscale the image or raise MAX_IMAGE_PIXELS"
    )
    try:
        img = Image.open(io.BytesIO(data), formats=BROWSER_FORMATS)
    except Image.DecompressionBombError:
        raise too_many from None
    except UnidentifiedImageError:
        if _signature(data):
            raise Unprocessable(
                f"{source} looks like a {_signature(data)} file but its header is corrupt",
                "Re-export or re-upload the image",
            ) from None
        raise UnsupportedMedia(
            f"{source} is not an image in a supported format ({', '.join(BROWSER_FORMATS)})",
            "Convert it to PNG or JPEG",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise Unprocessable(
            f"{source} has a corrupt image header ({exc})", "Re-export or re-upload the image"
        ) from None
    width, height = img.size
    if width * height > max_pixels:
        raise too_many
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return to_rgb_array(img)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise Unprocessable(
            f"{source} is truncated or corrupt and cannot be decoded ({exc})", "Re-export or re-upload the image"
        ) from None
