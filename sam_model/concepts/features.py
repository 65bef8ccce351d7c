"""An image's vision features for a concept engine: computed once, reused for every prompt.

A concept engine spends most of its time in the image backbone; the text prompts only drive
the cheaper fusion and decoding stages. `ConceptFeatures` is what the backbone produced for one
image (named tensors, engine-defined) plus the sizes needed to map results back, so that ten
labels on one image cost one backbone pass, and a cache can keep them between requests.

The bytes form follows `sam_model.common.embedding`: a little-endian header, the model id,
each tensor as name + dtype + shape + raw bytes, then a CRC32 — no pickle, so reading
untrusted cache contents can at worst raise ValueError. Floating tensors are stored as fp16
by default (bool masks stay bool).

Sizes per image at the real configurations (fp16 floats; fp32 doubles them):

- Grounding DINO tiny (Swin-T, images resized to shortest edge 800 / longest 1333): the three
  Swin stages it feeds forward, 192/384/768 channels at strides 8/16/32. A 1333x1000 photo is
  processed at 800x1066 -> 100x134, 50x67, 25x34 maps: 4.51 M values, 9.0 MB, plus bool masks
  (18 KB) and the pixel mask (1 byte a processed pixel, 0.85 MB). At the 800x1333 maximum:
  5.63 M values, 11.3 MB + 1.1 MB. Grounding DINO base (Swin-B: 256/512/1024 channels) is 4/3
  of that: 15.0 MB at 800x1333.
- SAM 3 (ViT-L/14 at 1008x1008): the backbone's last hidden state, 72x72 tokens x 1024 =
  5.31 M values, 10.6 MB, whatever the image size. The FPN neck (288/144/72 maps, 27.9 M
  values, 55.7 MB) is recomputed from it in each `find` instead of being stored: about 4% of
  the backbone's multiply-adds for a fifth of the bytes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

MAGIC = b"SAMCFT"
VERSION = 1
# After the magic: version, model-id length, tensor count, original (h, w), input (h, w).
_HEAD = struct.Struct("<BHBIIII")
# Per tensor: name length, dtype code, ndim; then the name, the shape (ndim x u64), the raw bytes.
_TENSOR = struct.Struct("<BBB")
_CRC = struct.Struct("<I")
_DTYPES: dict[int, torch.dtype] = {1: torch.float32, 2: torch.float16, 3: torch.bfloat16, 4: torch.bool}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}
_MAX_NDIM = 8
_MAX_TENSORS = 32


@dataclass(frozen=True)
class ConceptFeatures:
    """One image's backbone output (`tensors`, by name) and the sizes to map results back.

    `original_size` is the image's (h, w); `input_size` the (h, w) the processor fed the
    model. `model_id` names the engine and weights that made them: features only fit those.
    """

    tensors: Mapping[str, torch.Tensor]
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_id: str
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("original_size", "input_size"):
            size = tuple(getattr(self, name))
            if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
                raise ValueError(f"{name} must be two positive ints (h, w), got {size!r}")
            object.__setattr__(self, name, size)
        tensors = dict(self.tensors)
        if not tensors or len(tensors) > _MAX_TENSORS:
            raise ValueError(f"features need 1 to {_MAX_TENSORS} tensors, got {len(tensors)}")
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor) or tensor.dtype not in _CODES:
                raise ValueError(f"feature {name!r} must be a float32/float16/bfloat16/bool tensor")
            if tensor.dim() > _MAX_NDIM or not 0 < len(name.encode("utf-8")) <= 0xFF:
                raise ValueError(f"feature {name!r}: bad name or more than {_MAX_NDIM} dims")
        object.__setattr__(self, "tensors", tensors)
        object.__setattr__(self, "_names", tuple(tensors))

    def tensor(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The named tensor on `device`; floating ones in `dtype` (the model's), masks as they are."""
        if name not in self.tensors:
            raise ValueError(f"features lack {name!r} (have {list(self._names)}): not this engine's features")
        tensor = self.tensors[name]
        return tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensors as they are (not as serialised)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def to_bytes(self, dtype: torch.dtype | None = torch.float16) -> bytes:
        """Serialise, casting floating tensors to `dtype` first (None keeps their dtypes)."""
        if dtype is not None and (dtype not in _CODES or not dtype.is_floating_point):
            raise ValueError(f"unsupported dtype {dtype}")
        model_id = self.model_id.encode("utf-8")
        if len(model_id) > 0xFFFF:
            raise ValueError("model_id is too long to serialise")
        parts = [MAGIC, _HEAD.pack(VERSION, len(model_id), len(self._names), *self.original_size, *self.input_size)]
        parts.append(model_id)
        for name in self._names:
            tensor = self.tensors[name].detach()
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            tensor = tensor.cpu().contiguous()
            encoded = name.encode("utf-8")
            parts += [_TENSOR.pack(len(encoded), _CODES[tensor.dtype], tensor.dim()), encoded]
            parts.append(struct.pack(f"<{tensor.dim()}Q", *tensor.shape))
            parts.append(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ConceptFeatures:
        """Parse `to_bytes` output (tensors on the CPU); truncated, corrupt or foreign data raises ValueError."""
        view = memoryview(data).cast("B")
        if len(view) < len(MAGIC) + _HEAD.size + _CRC.size or bytes(view[: len(MAGIC)]) != MAGIC:
            raise ValueError("not serialised ConceptFeatures (bad magic or too short)")
        body = view[: len(view) - _CRC.size]
        if zlib.crc32(body) != _CRC.unpack_from(view, len(body))[0]:
            raise ValueError("ConceptFeatures bytes are corrupt or truncated (checksum mismatch)")
        version, id_len, count, oh, ow, ih, iw = _HEAD.unpack_from(body, len(MAGIC))
        if version != VERSION:
            raise ValueError(f"unsupported ConceptFeatures version {version}")
        reader = _Reader(body, len(MAGIC) + _HEAD.size)
        model_id = bytes(reader.take(id_len)).decode("utf-8")
        tensors: dict[str, torch.Tensor] = {}
        for _ in range(count):
            name_len, code, ndim = reader.unpack(_TENSOR)
            name = bytes(reader.take(name_len)).decode("utf-8")
            if code not in _DTYPES or ndim > _MAX_NDIM or name in tensors:
                raise ValueError("corrupt ConceptFeatures header (dtype, ndim or a repeated name)")
            shape = reader.unpack(struct.Struct(f"<{ndim}Q"))
            dtype = _DTYPES[code]
            numel = 1
            for dim in shape:
                numel *= dim
            payload = bytearray(reader.take(numel * torch.empty((), dtype=dtype).element_size()))
            raw = torch.frombuffer(payload, dtype=torch.uint8) if numel else torch.empty(0, dtype=torch.uint8)
            tensors[name] = raw.view(dtype).reshape(shape)
        if reader.offset != len(body):
            raise ValueError("ConceptFeatures bytes have trailing data")
        return cls(tensors, (oh, ow), (ih, iw), model_id)


class _Reader:
    """Sequential reads over the checked body; running past its end is a ValueError."""

    def __init__(self, body: memoryview, offset: int) -> None:
        self.body = body
        self.offset = offset

    def take(self, size: int) -> memoryview:
        if self.offset + size > len(self.body):
            raise ValueError("ConceptFeatures bytes are truncated")
        chunk = self.body[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))
