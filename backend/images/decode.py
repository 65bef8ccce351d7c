"""Decode image bytes into what the encoder takes: an HxWx3 uint8 RGB array, as LS displays it.

Orientation: browsers apply a JPEG's EXIF orientation when they draw it (CSS
`image-orientation: from-image` is the default since Chrome 81, Firefox 77, Safari 13.1, and it
applies to canvas drawImage too), and an <img>'s naturalWidth/naturalHeight are the oriented
size. Label Studio draws the image that way and its percent coordinates and
original_width/original_height refer to that displayed image. So we apply the EXIF transpose
before anything else: the returned array's shape is the size LS reports, and masks line up.

The pixel limit, and the size LS reports (`expected_size`), are checked on the header size,
before any pixel is decoded, so a 30000x30000 PNG of a few hundred bytes costs nothing. Decoded
pixels are converted to RGB a strip of rows at a time: converting a 10000x10000 LA PNG whole (to
RGBA, over a white canvas, to RGB, to an array, copied) peaked at 2.1 GiB RSS, by strips at 0.7 GiB
(Pillow's decoded pixels and the result).
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from backend.errors import PayloadTooLarge, Unprocessable, UnsupportedMedia

# What browsers render (TIFF: Safari only; JPEG covers MPO). Nothing that hands work to external
# programs (EPS) or that browsers never show. AVIF only where this Pillow build has it.
Image.init()
BROWSER_FORMATS = tuple(f for f in ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "ICO", "TIFF") if f in Image.OPEN)
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_STRIP_PIXELS = 1 << 20  # pixels converted at a time: a few MiB of temporaries whatever the image size
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_EXIF_IN_HEADER = ("JPEG", "MPO", "WEBP", "AVIF")
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


def size_mismatch(expected: tuple[int, int], actual: tuple[int, int]) -> Unprocessable:
    """The error for an image whose (width, height) is not the one LS shows."""
    return Unprocessable(
        f"Label Studio shows this image as {expected[0]}x{expected[1]} but the file is {actual[0]}x{actual[1]}",
        "make sure the task points at the same file LS displays (EXIF-rotated or resized copies differ)",
    )


def _displayed_sizes(img: Image.Image) -> list[tuple[int, int]]:
    """The (width, height) the image can have once EXIF-transposed, read from headers only.

    JPEG and WebP hold their EXIF and XMP ahead of the pixels, where Pillow reads them when opening:
    one answer. Elsewhere the orientation exif_transpose sees may differ (a PNG's eXIf may follow
    its pixel data; Pillow reads a TIFF's before decoding but not after), so both orders pass
    here, the header's first, and decode_image checks the decoded size exactly."""
    width, height = img.size
    if img.format not in _EXIF_IN_HEADER:
        return [(width, height), (height, width)]
    if img.getexif().get(ExifTags.Base.Orientation, 1) in _TRANSPOSING:
        return [(height, width)]
    return [(width, height)]


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """HxWx3 uint8 RGB: 16-bit keeps its high byte (what browsers show), transparency over white.

    Converted a strip of rows at a time into the one output array, so the temporaries stay small."""
    width, height = img.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[top:bottom] = _strip_to_rgb(img.crop((0, top, width, bottom)))
    return out


def _strip_to_rgb(img: Image.Image) -> np.ndarray:
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
    return np.asarray(img, dtype=np.uint8)


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 100_000_000,
    source: str = "the image data",
    expected_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode, EXIF-transpose and convert to RGB uint8; array.shape[:2] is LS's (height, width).

    `expected_size`: the (width, height) LS reports (original_width/height); a file of another
    size is refused from its header, before its pixels are decoded (a click must not pay for
    decoding an image it cannot use), and the decoded array is checked once more.
    Raises PayloadTooLarge (413) above `max_pixels`, UnsupportedMedia (415) for non-images,
    SVG and HTML, Unprocessable (422) for truncated or corrupt files and a size other than
    `expected_size`; messages name `source`.
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
        if expected_size is not None and tuple(expected_size) not in (sizes := _displayed_sizes(img)):
            raise size_mismatch(expected_size, sizes[0])
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        if expected_size is not None and img.size != tuple(expected_size):
            raise size_mismatch(expected_size, img.size)
        return to_rgb_array(img)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise Unprocessable(
            f"{source} is truncated or corrupt and cannot be decoded ({exc})", "Re-export or re-upload the image"
        ) from None
