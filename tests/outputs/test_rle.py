"""Brush RLE: byte-identical to label_studio_sdk's mask2rle/encode_rle; decodes what LS stores."""

from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle

from backend.errors import Unprocessable
from backend.outputs.rle import decode_values, encode_values, mask_to_rle, rle_to_mask
from tests.support.samples import sample


def sdk_rle(mask: np.ndarray) -> list[int]:
    """The oracle: what the SDK sends for a mask painted with 255."""
    return mask2rle((mask != 0).astype(np.uint8) * 255)


def ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1


def small_masks() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    masks = []
    for shape in [(1, 1), (1, 2), (1, 9), (1, 300), (300, 1), (2, 3), (17, 13), (64, 64), (120, 90)]:
        for p in (0.0, 0.01, 0.2, 0.5, 0.8, 0.99, 1.0):
            masks.append((f"{shape}-p{p}", rng.random(shape) < p))
    # Run lengths around every size-class edge (in values: 4 per pixel) and the 65536 split.
    for pixels in (1, 2, 3, 4, 5, 63, 64, 65, 16383, 16384, 16385, 32768, 32769, 50000):
        row = np.zeros(pixels + 2, dtype=bool)
        row[1:-1] = True
        masks.append((f"run{pixels}", row[None, :]))
    masks.append(("ellipse", ellipse(300, 400)))
    masks.append(("full-large", np.ones((300, 400), dtype=bool)))
    return masks


@pytest.mark.parametrize("name,mask", small_masks(), ids=lambda v: v if isinstance(v, str) else "")
def test_identical_to_sdk_and_round_trips(name: str, mask: np.ndarray) -> None:
    ours = mask_to_rle(mask)
    assert ours == sdk_rle(mask)
    assert np.array_equal(rle_to_mask(ours, *mask.shape), mask)
    rgba = decode_rle(ours).reshape(*mask.shape, 4)
    assert np.array_equal(rgba, np.repeat(mask[..., None], 4, axis=2).astype(np.uint8) * 255)


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_any_nonzero_is_foreground(dtype) -> None:
    rng = np.random.default_rng(1)
    values = rng.integers(0, 3, (40, 50))
    assert mask_to_rle(values.astype(dtype)) == sdk_rle(values != 0)


def test_non_contiguous_mask() -> None:
    mask = np.random.default_rng(2).random((60, 80)) < 0.3
    view = mask.T[::2]
    assert mask_to_rle(view) == sdk_rle(np.ascontiguousarray(view))


@pytest.mark.parametrize("n", [1, 2, 8, 9, 16, 17, 256, 257, 65536, 65537, 65538, 131072, 131073, 200000])
def test_encode_values_matches_sdk_encode_rle(n: int) -> None:
    """Arbitrary bytes reach the cases masks never do: runs of 1 and 1-value remainders."""
    rng = np.random.default_rng(n)
    constant = np.full(n, 7, dtype=np.uint8)
    noisy = rng.integers(0, 4, min(n, 3000)).astype(np.uint8)  # the SDK is slow on noise
    mixed = np.full(n, 200, dtype=np.uint8)
    mixed[-noisy.size :] = noisy
    for values in (constant, noisy, mixed):
        ours = encode_values(values)
        assert ours == encode_rle(values)
        assert np.array_equal(decode_values(ours), values)


def test_large_masks_match_sdk() -> None:
    big = ellipse(3000, 4000)
    assert mask_to_rle(big) == sdk_rle(big)
    noisy = np.random.default_rng(3).random((1000, 1000)) < 0.5
    ours = mask_to_rle(noisy)
    assert ours == sdk_rle(noisy)
    assert np.array_equal(rle_to_mask(ours, 1000, 1000), noisy)


def test_empty_image_has_header_only() -> None:
    rle = mask_to_rle(np.zeros((0, 5), dtype=bool))
    assert len(rle) == 7 and rle[:4] == [0, 0, 0, 0]
    assert rle_to_mask(rle, 0, 5).shape == (0, 5)


def test_decodes_what_ls_stored() -> None:
    stored = sample("stored_prediction_task.json")[0]["result"][0]
    rle, h, w = stored["value"]["rle"], stored["original_height"], stored["original_width"]
    expected = decode_rle(rle).reshape(h, w, 4)[:, :, 3] != 0
    mask = rle_to_mask(rle, h, w)
    assert mask.any() and np.array_equal(mask, expected)
    assert mask_to_rle(mask) == rle


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def _stream(chunks: list[tuple[bool, int, list[int]]], num: int) -> list[int]:
    """An independent bit-string writer (like @thi.ng/rle-pack's encoder, with literal runs)."""
    sizes = (3, 4, 8, 16)
    bits = _bits(num, 32) + _bits(7, 5) + "".join(_bits(s - 1, 4) for s in sizes)
    for repeated, size_class, values in chunks:
        count = len(values)
        bits += ("1" if repeated else "0") + _bits(size_class, 2) + _bits(count - 1, sizes[size_class])
        bits += _bits(values[0], 8) if repeated else "".join(_bits(v, 8) for v in values)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def test_decodes_literal_chunks_like_the_sdk() -> None:
    rng = np.random.default_rng(4)
    chunks = [
        (False, 0, [1, 2, 3]),
        (True, 1, [9] * 12),
        (False, 2, rng.integers(0, 256, 200).tolist()),
        (True, 3, [255] * 1000),
        (False, 3, rng.integers(0, 256, 300).tolist()),
        (True, 0, [0] * 2),
    ]
    values = [v for _, _, vs in chunks for v in vs]
    stream = _stream(chunks, len(values))
    assert np.array_equal(decode_values(stream), decode_rle(stream))
    assert decode_values(bytes(stream)).tolist() == values


def test_last_chunk_past_num_is_clipped_like_the_sdk() -> None:
    stream = _stream([(True, 2, [255] * 20)], 8)
    assert np.array_equal(decode_values(stream), decode_rle(stream))


def _with_word_size(rle: list[int], bits: int) -> list[int]:
    """The stream with its 5-bit word-size field (bits 32..36) rewritten."""
    return rle[:4] + [((bits - 1) << 3) | (rle[4] & 0b111)] + rle[5:]


@pytest.mark.parametrize(
    "rle, h, w",
    [
        ([0, 0, 0], 1, 1),  # shorter than the header
        (mask_to_rle(np.ones((4, 4), dtype=bool))[:-2], 4, 4),  # stream cut short
        (mask_to_rle(np.ones((4, 4), dtype=bool)), 4, 5),  # wrong image size
        (_with_word_size(mask_to_rle(np.ones((1, 1), dtype=bool)), 16), 1, 1),
        ([1, 2, 300], 1, 1),  # not bytes
        ([0.5, 1.0], 1, 1),  # not integers
        ([[0, 0]], 1, 1),  # not flat
        ([255, 255, 255, 255, 57, 27, 255, 255, 255, 0], 1, 1),  # asks for 4 G values
    ],
)
def test_bad_streams_are_refused(rle, h, w) -> None:
    with pytest.raises(Unprocessable):
        rle_to_mask(rle, h, w)
