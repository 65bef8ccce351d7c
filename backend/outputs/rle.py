"""Label Studio brush RLE (the @thi.ng/rle-pack bit stream), encoded and decoded with numpy.

Stream layout (MSB first, zero-padded to whole bytes, sent as a list of ints 0..255):
32 bits ``num`` values, 5 bits ``word_size - 1`` (7), four 4-bit ``rle_size - 1`` fields
(sizes 3, 4, 8, 16), then chunks: 1 flag bit (1 = one value repeated, 0 = literal values),
2 bits size class, ``size`` bits holding ``count - 1``, then 8-bit value(s).

The encoder reproduces label_studio_sdk's ``mask2rle`` byte for byte, so what we send is
exactly what the reference backends send: every run of equal values becomes repeat chunks
(a run of one becomes a one-value literal), in the smallest of the 3/4/8-bit classes that
holds it; longer runs use the 16-bit class in pieces of 65536 values, the remainder last;
and the padding always adds 1..8 zero bits (a whole zero byte when already aligned).
"""

from __future__ import annotations

import numpy as np

from backend.errors import Unprocessable

_WORD_BITS = 8
_RLE_SIZES = (3, 4, 8, 16)
_HEADER_BITS = 32 + 5 + 4 * 4
_MAX_CHUNK = 1 << 16
_CHANNELS = 4  # LS paints RGBA; every pixel value is repeated for R, G, B and A
_FOREGROUND = 255


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """Encode a 2-D mask (bool or integer, non-zero = inside) as LS brush RLE.

    Identical to ``label_studio_sdk.converter.brush.mask2rle((mask != 0) * 255)``.
    Runs are found on the pixels, not on the 4x repeated RGBA array, to save memory.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    flat = np.ascontiguousarray(mask).reshape(-1)
    if flat.dtype != np.bool_:
        flat = flat != 0
    starts, lengths = _runs(flat)
    values = np.where(flat[starts], _FOREGROUND, 0).astype(np.uint8)
    return list(_pack(flat.size * _CHANNELS, lengths * _CHANNELS, values).tobytes())


def encode_values(values: np.ndarray) -> list[int]:
    """Encode any 1-D uint8 array (e.g. flattened RGBA) the way the SDK's ``encode_rle`` does."""
    flat = np.asarray(values).reshape(-1)
    if flat.dtype != np.uint8:
        raise ValueError(f"values must be uint8, got {flat.dtype}")
    starts, lengths = _runs(flat)
    return list(_pack(flat.size, lengths, flat[starts]).tobytes())


def rle_to_mask(rle: list[int] | bytes | np.ndarray, height: int, width: int) -> np.ndarray:
    """Decode LS brush RLE into a (height, width) bool mask: a pixel is in where alpha != 0."""
    values = decode_values(rle, expected_num=height * width * _CHANNELS)
    return values.reshape(height, width, _CHANNELS)[:, :, 3] != 0


def decode_values(rle: list[int] | bytes | np.ndarray, expected_num: int | None = None) -> np.ndarray:
    """Decode an rle-pack stream of 8-bit words into its flat uint8 values.

    ``expected_num`` (checked against the header before anything is allocated) keeps a
    hostile header from asking for gigabytes. Chunk boundaries depend on the previous
    chunk's header, so headers are walked one by one in Python; values are then laid out
    with one ``np.repeat``. Cost is per chunk, not per pixel: a SAM mask has a few
    thousand chunks, however large the image.
    """
    data = _as_bytes(rle)
    total_bits = len(data) * 8
    if total_bits < _HEADER_BITS:
        raise Unprocessable("brush RLE is shorter than its header", "send the rle list LS stored, unchanged")
    num = _read(data, 0, 32)
    if expected_num is not None and num != expected_num:
        raise Unprocessable(
            f"brush RLE holds {num} values, the image needs {expected_num} (4 per pixel)",
            "send original_width/original_height of the image the brush region was drawn on",
        )
    word_bits = _read(data, 32, 5) + 1
    sizes = [_read(data, 37 + 4 * k, 4) + 1 for k in range(4)]
    if word_bits != _WORD_BITS:
        raise Unprocessable(f"brush RLE word size {word_bits} bits is not supported (LS uses 8)")
    padded = data + bytes(8)  # lets every header read take 8 bytes without bounds checks
    count_masks = [(1 << size) - 1 for size in sizes]
    counts: list[int] = []
    words: list[int] = []
    add_count, add_word, from_bytes = counts.append, words.append, int.from_bytes
    produced, pos = 0, _HEADER_BITS
    while produced < num:
        if pos + 3 > total_bits:
            raise Unprocessable(f"brush RLE ends after {produced} of {num} values", "send the whole rle list")
        # 64 bits from pos hold a whole repeat chunk: 3 + at most 16 + 8 bits.
        head = from_bytes(padded[pos >> 3 : (pos >> 3) + 8], "big") << (pos & 7)
        size_class = (head >> 61) & 3
        size = sizes[size_class]
        count = ((head >> (61 - size)) & count_masks[size_class]) + 1
        if (head >> 63) & 1:
            add_count(count)
            add_word((head >> (53 - size)) & 0xFF)
            pos += 11 + size
        else:
            pos += 3 + size
            if pos + 8 * count > total_bits:
                raise Unprocessable("brush RLE ends inside a literal chunk", "send the whole rle list")
            counts.extend([1] * count)
            words.extend(_read_bytes(padded, pos, count))
            pos += 8 * count
        produced += count
    if pos > total_bits:
        raise Unprocessable("brush RLE ends inside its last chunk", "send the whole rle list")
    out = np.repeat(np.asarray(words, dtype=np.uint8), np.asarray(counts, dtype=np.int64))
    return out[:num]  # like the reference decoders, a last chunk running past num is clipped


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and length of each run of equal values in a 1-D array."""
    if flat.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    return starts, lengths


def _chunk_table() -> tuple[np.ndarray, np.ndarray]:
    """Chunk bits (left-aligned in 64) and bit count for every (value, run length <= 256).

    Index ``value * 257 + length``. The SDK picks the smallest size class that holds the
    run; a run of one is a one-value literal (flag 0), longer runs repeat (flag 1).
    """
    length = np.arange(257, dtype=np.uint64)
    size_class = (length > 8).astype(np.uint64) + (length > 16)
    size = np.take(np.asarray(_RLE_SIZES, dtype=np.uint64), size_class)
    flag = (length > 1).astype(np.uint64)
    count_bits = (np.maximum(length, 1) - 1) << (np.uint64(61) - size)
    value = np.arange(256, dtype=np.uint64)[:, None] << (np.uint64(53) - size)[None, :]
    aligned = (flag << np.uint64(63)) | (size_class << np.uint64(61)) | count_bits | value
    nbits = np.broadcast_to(3 + size + _WORD_BITS, aligned.shape).astype(np.uint8)
    return aligned.reshape(-1), nbits.reshape(-1)


_TABLE_BITS, _TABLE_NBITS = _chunk_table()
_LONG_CHUNK_BITS = 3 + 16 + _WORD_BITS


def _pack(num: int, lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Bytes of the stream for runs (lengths, uint8 values), chunked as the SDK chunks them."""
    if num >= 1 << 32:
        raise ValueError(f"{num} values do not fit the 32-bit length of brush RLE")
    lengths = lengths.astype(np.int64, copy=False)
    long_run = lengths > 256
    if np.any(long_run):
        # Long runs: (n-1) full 65536-value chunks then the remainder, all in the 16-bit class.
        pieces = np.where(long_run, (lengths - 1) // _MAX_CHUNK + 1, 1)
        ends = np.cumsum(pieces)
        is_last = np.zeros(int(ends[-1]), dtype=bool)
        is_last[ends - 1] = True
        counts = np.where(is_last, np.repeat(lengths - (pieces - 1) * _MAX_CHUNK, pieces), _MAX_CHUNK)
        values = np.repeat(values, pieces)
        long_run = np.repeat(long_run, pieces)
    else:
        counts = lengths
    key = values.astype(np.int64) * 257 + np.where(long_run, 0, counts)
    aligned = np.take(_TABLE_BITS, key)
    nbits = np.take(_TABLE_NBITS, key)
    if np.any(long_run):
        at = np.flatnonzero(long_run)
        aligned[at] = (
            (np.uint64(0b111) << np.uint64(61))
            | ((counts[at].astype(np.uint64) - 1) << np.uint64(45))
            | (values[at].astype(np.uint64) << np.uint64(37))
        )
        nbits[at] = _LONG_CHUNK_BITS
    header = (num << 21) | ((_WORD_BITS - 1) << 16)
    for k, size in enumerate(_RLE_SIZES):
        header |= (size - 1) << (12 - 4 * k)
    return _concat_bits(header, _HEADER_BITS, aligned, nbits)


def _concat_bits(header: int, header_bits: int, aligned: np.ndarray, nbits: np.ndarray) -> np.ndarray:
    """Concatenate codes (left-aligned in uint64, ``nbits`` long) MSB first after a header.

    Codes go into 64-bit big-endian words: the codes starting in one word are OR-reduced
    together (they are sorted, so ``reduceat`` does it), and a code crossing a word
    boundary ORs its tail into the next word, at most one per word.
    """
    starts = np.empty(aligned.size + 1, dtype=np.int64)
    starts[0] = header_bits
    np.cumsum(nbits, dtype=np.int64, out=starts[1:])
    starts[1:] += header_bits
    total = int(starts[-1])
    starts = starts[:-1]
    n_bytes = total // 8 + 1  # the SDK always pads 1..8 zero bits
    words = np.zeros((n_bytes + 7) // 8 + 1, dtype=np.uint64)
    words[0] = np.uint64(header << (64 - header_bits))
    if aligned.size:
        word = starts >> 6
        bit = (starts & 63).astype(np.uint64)
        first = np.flatnonzero(word[1:] != word[:-1]) + 1
        first = np.concatenate(([0], first))
        words[word[first]] |= np.bitwise_or.reduceat(aligned >> bit, first)
        tail = np.flatnonzero(bit + nbits > 64)
        words[word[tail] + 1] |= aligned[tail] << (np.uint64(64) - bit[tail])
    return words.astype(">u8").view(np.uint8)[:n_bytes]


def _as_bytes(rle: list[int] | bytes | np.ndarray) -> bytes:
    if isinstance(rle, (bytes, bytearray)):
        return bytes(rle)
    arr = np.asarray(rle)
    if arr.ndim != 1 or (arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255)):
        raise Unprocessable("brush RLE must be a flat list of integers 0..255", "send the rle list LS stored")
    return arr.astype(np.uint8).tobytes()


def _read(data: bytes, pos: int, nbits: int) -> int:
    """nbits (<= 32) starting at bit pos, MSB first."""
    word = int.from_bytes(data[pos >> 3 : (pos >> 3) + 5].ljust(5, b"\0"), "big")
    return (word >> (40 - (pos & 7) - nbits)) & ((1 << nbits) - 1)


def _read_bytes(data: bytes, pos: int, count: int) -> list[int]:
    """count 8-bit words starting at bit pos (not necessarily byte aligned)."""
    start, shift = pos >> 3, pos & 7
    raw = np.frombuffer(data, dtype=np.uint8, count=count + 1, offset=start).astype(np.uint16)
    return (((raw[:-1] << shift) | (raw[1:] >> (8 - shift))) & 0xFF).tolist()
