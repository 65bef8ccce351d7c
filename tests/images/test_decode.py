"""Decoding: EXIF orientation, modes -> RGB uint8, limits checked before decoding, clear refusals."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from backend.errors import PayloadTooLarge, Unprocessable, UnsupportedMedia
from backend.images import decode_image

RED, BLUE = (255, 0, 0), (0, 0, 255)


def image_bytes(img: Image.Image, fmt: str = "PNG", **save_kw) -> bytes:
    """`img` saved as a file of format `fmt` (Pillow's save options: EXIF, quality, transparency...)."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kw)
    return buf.getvalue()


def left_red_right_blue(w: int = 40, h: int = 20) -> Image.Image:
    img = Image.new("RGB", (w, h), RED)
    img.paste(BLUE, (w // 2, 0, w, h))
    return img


@pytest.mark.parametrize(
    "orientation, shape, first_color",
    [
        (1, (20, 40), "red_left"),
        (6, (40, 20), "red_top"),  # 6: rotate 90 degrees clockwise to display
        (8, (40, 20), "red_bottom"),  # 8: rotate 90 degrees counter-clockwise
        (3, (20, 40), "red_right"),  # 3: rotate 180
    ],
)
def test_exif_orientation_applied_like_browsers(orientation, shape, first_color):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = image_bytes(left_red_right_blue(), "JPEG", exif=exif, quality=95)
    arr = decode_image(data)
    assert arr.shape == (*shape, 3) and arr.dtype == np.uint8
    h, w = shape
    probes = {
        "red_left": ((h // 2, 2), (h // 2, w - 3)),
        "red_right": ((h // 2, w - 3), (h // 2, 2)),
        "red_top": ((2, w // 2), (h - 3, w // 2)),
        "red_bottom": ((h - 3, w // 2), (2, w // 2)),
    }[first_color]
    red_at, blue_at = probes
    assert arr[red_at][0] > 200 and arr[red_at][2] < 60
    assert arr[blue_at][2] > 200 and arr[blue_at][0] < 60


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_corrupt_exif_ignored_like_browsers_do():
    garbage = b"Exif\0\0MM\0*\0\0\0\x08\x00\x01\x01\x12\x00\x03\xff\xff\xff\xff\x00\x06"
    data = image_bytes(left_red_right_blue(), "JPEG")
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage + data[2:]
    assert decode_image(data).shape == (20, 40, 3)


def test_rgb_png_exact():
    img = left_red_right_blue(4, 2)
    arr = decode_image(image_bytes(img))
    assert arr.flags["C_CONTIGUOUS"] and arr.flags["WRITEABLE"]
    np.testing.assert_array_equal(arr, np.asarray(img))


def test_16bit_gray_keeps_high_byte():
    values = np.array([[0, 255, 256, 1000], [30000, 40000, 65280, 65535]], dtype=np.uint16)
    arr = decode_image(image_bytes(Image.fromarray(values)))
    expected = (values >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(arr[:, :, c], expected)


def test_16bit_rgb():
    import cv2

    bgr = np.zeros((2, 3, 3), np.uint16)
    bgr[..., 2] = 65535  # red in BGR order
    bgr[..., 1] = 100 * 256
    _, buf = cv2.imencode(".png", bgr)
    arr = decode_image(buf.tobytes())
    assert arr.dtype == np.uint8 and arr[0, 0].tolist() == [255, 100, 0]


def test_palette_and_palette_transparency():
    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    arr = decode_image(image_bytes(pal))
    assert arr[0, 1].tolist() == [10, 200, 30] and arr[0, 0].tolist() == [0, 0, 0]
    pal.info["transparency"] = 0  # index 0 transparent: shows the white canvas
    arr = decode_image(image_bytes(pal, transparency=0))
    assert arr[0, 0].tolist() == [255, 255, 255] and arr[0, 1].tolist() == [10, 200, 30]


def test_rgba_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # fully transparent black -> white
    rgba[1, 0] = (0, 0, 255, 128)  # half blue over white
    arr = decode_image(image_bytes(Image.fromarray(rgba, "RGBA")))
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[0, 1].tolist() == [255, 255, 255]
    assert abs(int(arr[1, 0, 0]) - 127) <= 2 and arr[1, 0, 2] == 255


def test_grayscale_and_la_and_bilevel():
    gray = Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L")
    assert decode_image(image_bytes(gray))[0].tolist() == [[0] * 3, [128] * 3, [255] * 3]
    assert decode_image(image_bytes(gray.convert("LA")))[0, 1].tolist() == [128] * 3
    assert decode_image(image_bytes(gray.convert("1")))[0, 2].tolist() == [255] * 3


def test_cmyk_jpeg():
    data = image_bytes(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=95)
    px = decode_image(data)[1, 1]
    assert px[0] > 200 and px[1] < 60 and px[2] < 60  # red


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny (incomplete) IDAT: ~100 bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def test_30000x30000_png_refused_before_decoding(monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(huge_png(30000, 30000), source="http://ls/data/upload/1/huge.png")
    assert time.perf_counter() - started < 1.0
    assert err.value.status == 413 and "huge.png" in err.value.message and "MAX_IMAGE_PIXELS" in err.value.fix


def test_pixel_limit_is_ours_not_pillows(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    data = image_bytes(Image.new("RGB", (10, 10)))
    with pytest.raises(PayloadTooLarge):
        decode_image(data, max_pixels=99)
    assert decode_image(data, max_pixels=100).shape == (10, 10, 3)
    decode_image(data, max_pixels=200_000_000)
    assert Image.MAX_IMAGE_PIXELS >= 200_000_000  # raised to our limit so Pillow does not refuse first


def test_truncated_png_is_unprocessable():
    data = image_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    with pytest.raises(Unprocessable) as err:
        decode_image(data[: len(data) // 2], source="task 3 image")
    assert err.value.status == 422 and "task 3 image" in err.value.message and "truncated" in err.value.message


def test_truncated_jpeg_is_unprocessable():
    data = image_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(Unprocessable):
        decode_image(data[: len(data) // 2])


def test_corrupt_header_is_unprocessable():
    data = huge_png(10, 10)
    bad = data[:16] + b"\xff\xff" + data[18:]  # IHDR width changed, its CRC now wrong
    with pytest.raises(Unprocessable, match="looks like a PNG file but its header is corrupt"):
        decode_image(bad)


@pytest.mark.parametrize(
    "data, words",
    [
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "SVG"),
        (b"\xef\xbb\xbf  <svg width='1' height='1'></svg>", "SVG"),
        (b"<!DOCTYPE html><html><body>Sign in</body></html>", "HTML"),
        (b"%PDF-1.4 not an image", "not an image"),
        (b"", "not an image"),
    ],
)
def test_non_raster_refused(data, words):
    with pytest.raises(UnsupportedMedia) as err:
        decode_image(data, source="http://host/x")
    assert err.value.status == 415 and words in err.value.message and "http://host/x" in err.value.message


def test_formats_browsers_cannot_show_are_refused():
    with pytest.raises(UnsupportedMedia):
        decode_image(image_bytes(Image.new("RGB", (4, 4)), "PCX"))


def test_gif_and_webp():
    img = left_red_right_blue(8, 4)
    assert decode_image(image_bytes(img, "GIF"))[0, 0].tolist() == list(RED)
    assert decode_image(image_bytes(img, "WEBP", lossless=True))[0, 7].tolist() == list(BLUE)


# ---- the size LS reports, checked before decoding -------------------------------------------------


def no_pixel_decoding(monkeypatch) -> None:
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_size_other_than_the_one_ls_shows_is_refused_before_decoding(monkeypatch, fmt):
    data = image_bytes(left_red_right_blue(), fmt)
    no_pixel_decoding(monkeypatch)
    with pytest.raises(Unprocessable) as err:
        decode_image(data, source="http://ls/data/upload/1/a.png", expected_size=(10000, 10000))
    assert err.value.status == 422
    assert err.value.message == "Label Studio shows this image as 10000x10000 but the file is 40x20"
    assert "same file LS displays" in err.value.fix


def test_the_expected_size_is_the_exif_oriented_one():
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 20 wide, 40 high
    data = image_bytes(left_red_right_blue(), "JPEG", exif=exif, quality=95)
    assert decode_image(data, expected_size=(20, 40)).shape == (40, 20, 3)
    with pytest.raises(Unprocessable, match="shows this image as 40x20 but the file is 20x40"):
        decode_image(data, expected_size=(40, 20))


def test_a_png_of_the_transposed_size_is_refused_once_decoded():
    """A PNG's EXIF orientation may follow its pixels, so its header allows both orders; the
    decoded size is checked too."""
    with pytest.raises(Unprocessable, match="shows this image as 20x40 but the file is 40x20"):
        decode_image(image_bytes(left_red_right_blue()), expected_size=(20, 40))
    assert decode_image(image_bytes(left_red_right_blue()), expected_size=(40, 20)).shape == (20, 40, 3)


# ---- conversion to RGB, a strip at a time ---------------------------------------------------------


def whole_image_rgb(img: Image.Image) -> np.ndarray:
    """The oracle: the whole-image conversion (transparency composited over white, then RGB)."""
    canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
    canvas.alpha_composite(img.convert("RGBA"))
    return np.asarray(canvas.convert("RGB"))


@pytest.mark.parametrize("mode", ["LA", "RGBA", "RGB", "L", "P"])
def test_strips_give_the_whole_image_conversion(mode):
    """1500x1000 is several strips, with a short last one; every pixel must match."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1000, 1500, 4), dtype=np.uint8)
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    arr = decode_image(image_bytes(img))
    assert arr.shape == (1000, 1500, 3) and arr.flags.writeable and arr.flags.c_contiguous
    assert np.array_equal(arr, whole_image_rgb(img))


def test_an_la_image_costs_the_result_and_the_decoded_pixels_not_four_copies(tmp_path):
    """A 16-megapixel LA PNG, decoded in a fresh process: the peak RSS grows by about 7 bytes a pixel
    (Pillow's 4-byte LA pixels, the 3-byte result), not the 13.7 that whole-image conversions took."""
    path = tmp_path / "la.png"
    Image.new("LA", (4000, 4000), (90, 128)).save(path)
    code = (
        "import resource, sys\n"
        "from backend.images.decode import decode_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "arr = decode_image(data)\n"
        "assert arr.shape == (4000, 4000, 3) and arr[0, 0].tolist() == [172, 172, 172], arr[0, 0]\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        check=False,
        capture_output=True,
        timeout=120,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr
    per_pixel = int(out.stdout) / (4000 * 4000)
    assert per_pixel < 10, f"peak RSS grew by {per_pixel:.1f} bytes per pixel"
