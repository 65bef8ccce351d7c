"""An encoded image that can leave the process: features plus the sizes needed to decode.

The bytes form is what the embedding cache stores (Redis, disk). It is a fixed
little-endian header, the model id, then the raw tensor bytes — no pickle, so reading
untrusted cache contents can at worst raise ValueError, never run code. A trailing CRC32
over everything before it catches corruption instead of returning garbage features.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import torch

MAGIC = b"SAMEMB"
VERSION = 1
# Header after the magic: version, dtype code, ndim, model-id length, original (h, w),
# input (h, w). Then the shape (ndim x u64), the model id, the raw tensor, a crc32.
_HEAD = struct.Struct("<BBBHIIII")
_CRC = struct.Struct("<I")
_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32,
    2: torch.float16,
    3: torch.bfloat16,
    4: torch.uint8,
    5: torch.int8,
    6: torch.int16,
    7: torch.int32,
    8: torch.int64,
    9: torch.float64,
    10: torch.bool,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_NDIM = 8


@dataclass(frozen=True)
class ImageEmbedding:
    """Encoder output for one image, with the sizes the decoder needs to map masks back."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_id: str

    def __post_init__(self) -> None:
        for name in ("original_size", "input_size"):
            size = tuple(getattr(self, name))
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError(f"{name} must be two positive ints (h, w), got {size!r}")
            object.__setattr__(self, name, size)
        if self.features.dtype not in _CODES:
            raise ValueError(f"unsupported features dtype {self.features.dtype}")

    def to_bytes(self, dtype: torch.dtype | None = torch.float16) -> bytes:
        """Serialise, casting the features to `dtype` first (None keeps their dtype)."""
        features = self.features.detach()
        if dtype is not None:
            if dtype not in _CODES:
                raise ValueError(f"unsupported dtype {dtype}")
            features = features.to(dtype)
        features = features.cpu().contiguous()
        if features.dim() > _MAX_NDIM:
            raise ValueError(f"features have {features.dim()} dims, at most {_MAX_NDIM} supported")
        raw = features.reshape(-1).view(torch.uint8).numpy().tobytes()
        model_id = self.model_id.encode("utf-8")
        if len(model_id) > 0xFFFF:
            raise ValueError("model_id is too long to serialise")
        head = _HEAD.pack(
            VERSION, _CODES[features.dtype], features.dim(), len(model_id), *self.original_size, *self.input_size
        )
        body = MAGIC + head + struct.pack(f"<{features.dim()}Q", *features.shape) + model_id + raw
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ImageEmbedding:
        """Parse `to_bytes` output; anything truncated, corrupt or foreign raises ValueError."""
        view = memoryview(data).cast("B")
        start = len(MAGIC) + _HEAD.size
        if len(view) < start + _CRC.size or bytes(view[: len(MAGIC)]) != MAGIC:
            raise ValueError("not a serialised ImageEmbedding (bad magic or too short)")
        body = view[: len(view) - _CRC.size]
        if zlib.crc32(body) != _CRC.unpack_from(view, len(body))[0]:
            raise ValueError("ImageEmbedding bytes are corrupt or truncated (checksum mismatch)")
        version, code, ndim, id_len, oh, ow, ih, iw = _HEAD.unpack_from(view, len(MAGIC))
        if version != VERSION:
            raise ValueError(f"unsupported ImageEmbedding version {version}")
        if code not in _DTYPES or ndim > _MAX_NDIM:
            raise ValueError("corrupt ImageEmbedding header (dtype or ndim)")
        tail = body[start:]
        offset = 8 * ndim + id_len
        if len(tail) < offset:
            raise ValueError("ImageEmbedding bytes are truncated")
        shape = struct.unpack_from(f"<{ndim}Q", tail)
        dtype = _DTYPES[code]
        numel = 1
        for dim in shape:
            numel *= dim
        if len(tail) != offset + numel * _itemsize(dtype):
            raise ValueError("ImageEmbedding payload length does not match its shape")
        model_id = bytes(tail[8 * ndim : offset]).decode("utf-8")
        payload = bytearray(tail[offset:])  # a writable copy that the tensor then owns
        if numel:
            features = torch.frombuffer(payload, dtype=torch.uint8).view(dtype).reshape(shape)
        else:
            features = torch.empty(shape, dtype=dtype)
        return cls(features, (oh, ow), (ih, iw), model_id)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
