"""Short-lived store of the previous click's low-res mask logits, for mask refinement.

SAM refines a mask best when the decoder gets the low-res logits (1, 256, 256) of the
previous prediction for the same image as `mask_input`. LS sends every click of a region
again on each click, so the logits of the prompt without its newest click are looked up by
(image key, canonical text of that earlier prompt). Kept briefly (minutes): in-process LRU,
plus Redis so another web process can serve the next click. Values in Redis are a small
header + raw float bytes, never pickle. Redis is optional and may fail at any time.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Callable, Sequence

import numpy as np

from backend.cache.lru import ByteLRU
from backend.cache.redis_link import RedisLink

_MAGIC = b"SAMLGT"
_VERSION = 1
_HEADER = struct.Struct("<6sBcB")  # magic, version, numpy dtype char ('e' fp16 | 'f' fp32), ndim
_DTYPES = {"e": np.dtype("<f2"), "f": np.dtype("<f4")}
# The decoder's mask_input: one 256x256 low-res mask (SAM's frame; the GrabCut engine uses it too).
MASK_INPUT_SHAPE = (1, 256, 256)


def encode_logits(logits: np.ndarray, dtype: np.dtype) -> bytes:
    """Header + shape (uint32 each) + raw little-endian floats."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if dtype.char not in _DTYPES:
        raise ValueError(f"logits are stored as float16 or float32, not {dtype}")
    array = np.ascontiguousarray(logits, dtype=dtype)
    header = _HEADER.pack(_MAGIC, _VERSION, dtype.char.encode(), array.ndim)
    return header + struct.pack(f"<{array.ndim}I", *array.shape) + array.tobytes()


def decode_logits(raw: bytes) -> np.ndarray:
    """float32 array from encode_logits' bytes; ValueError on anything malformed."""
    if len(raw) < _HEADER.size:
        raise ValueError("too short for a logits header")
    magic, version, char, ndim = _HEADER.unpack_from(raw)
    if magic != _MAGIC or version != _VERSION:
        raise ValueError("not a logits value (bad magic or version)")
    dtype = _DTYPES.get(char.decode("latin-1"))
    if dtype is None:
        raise ValueError(f"unknown logits dtype {char!r}")
    shape_end = _HEADER.size + 4 * ndim
    if len(raw) < shape_end:
        raise ValueError("truncated logits shape")
    shape = struct.unpack_from(f"<{ndim}I", raw, _HEADER.size)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - shape_end != expected:
        raise ValueError(f"logits payload is {len(raw) - shape_end} bytes, shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=shape_end).reshape(shape).astype(np.float32)


def prompt_signature(
    point_coords: Sequence[Sequence[float]] | np.ndarray | None = None,
    point_labels: Sequence[int] | np.ndarray | None = None,
    box: Sequence[float] | np.ndarray | None = None,
) -> str:
    """Canonical text of a prompt in pixels: the same clicks give the same string in any process.

    Rounded to 0.1 px so float noise from the percent -> pixel conversion cannot split keys;
    point order is kept because the key names a prefix of the click sequence.
    """
    coords = [] if point_coords is None else np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
    labels = [] if point_labels is None else np.asarray(point_labels).reshape(-1)
    if len(coords) != len(labels):
        raise ValueError(f"{len(coords)} points but {len(labels)} labels")
    points = ";".join(f"{x:.1f},{y:.1f},{int(label)}" for (x, y), label in zip(coords, labels, strict=True))
    box_text = "" if box is None else ",".join(f"{v:.1f}" for v in np.asarray(box, dtype=np.float64).reshape(4))
    return f"p:{points}|b:{box_text}"


class LogitsStore:
    """Previous low-res logits by (image key, prompt signature); entries expire after ttl_s."""

    def __init__(
        self,
        local_max_bytes: int = 64 * 1024 * 1024,  # 256 entries of (1, 256, 256) float32
        redis_url: str = "",
        *,
        ttl_s: int = 600,
        store_dtype: np.dtype = np.float16,
        logger: logging.Logger | None = None,
        key_prefix: str = "sam:logits:",
        redis_retry_after_s: float = 5.0,
        shape: tuple[int, ...] = MASK_INPUT_SHAPE,
        on_reject: Callable[[], None] = lambda: None,
    ):
        """A Redis value that is corrupt, not of `shape` or not finite is a miss, counted by `on_reject()`."""
        self._logger = logger or logging.getLogger(__name__)
        self._shape = tuple(shape)
        self._on_reject = on_reject
        self._local: ByteLRU[np.ndarray] = ByteLRU(local_max_bytes, ttl_s=ttl_s)
        self._link = RedisLink(redis_url, name="logits store", logger=self._logger, retry_after_s=redis_retry_after_s)
        self._ttl_s = ttl_s
        self._store_dtype = np.dtype(store_dtype)
        self._prefix = key_prefix
        encode_logits(np.zeros((1,), np.float32), self._store_dtype)  # reject a bad dtype now, not per click

    def put(self, image_key: str, prompt_signature: str, logits: np.ndarray) -> None:
        """Remember logits (e.g. (1, 256, 256)) for the next click on this image with this prompt prefix."""
        key = self._key(image_key, prompt_signature)
        logits = np.array(logits, dtype=np.float32)  # own copy: callers may reuse their buffer
        self._local.put(key, logits, logits.nbytes)
        self._link.call(lambda r: r.set(key, encode_logits(logits, self._store_dtype), ex=self._ttl_s), None)

    def get(self, image_key: str, prompt_signature: str) -> np.ndarray | None:
        """float32 logits, or None when unknown, expired, unreachable or corrupt."""
        key = self._key(image_key, prompt_signature)
        hit = self._local.get(key)
        if hit is not None:
            return hit.copy()
        raw = self._link.call(lambda r: r.get(key), None)
        if raw is None:
            return None
        try:
            logits = decode_logits(raw)
            if logits.shape != self._shape or not np.isfinite(logits).all():
                raise ValueError(
                    f"logits of shape {logits.shape} (finite: {bool(np.isfinite(logits).all())}), "
                    f"the decoder takes finite {self._shape}"
                )
        except ValueError as exc:
            # Never kept locally: a bad value in the process cache would fail every later click too.
            self._logger.warning("logits store: corrupt or unusable value in Redis (%s); ignoring it", exc)
            self._on_reject()
            self._link.call(lambda r: r.delete(key), None)
            return None
        self._local.put(key, logits, logits.nbytes)
        return logits.copy()

    def close(self) -> None:
        self._link.close()

    def _key(self, image_key: str, prompt_signature: str) -> str:
        digest = hashlib.sha256(f"{image_key}\0{prompt_signature}".encode()).hexdigest()
        return self._prefix + digest
