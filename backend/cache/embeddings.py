"""The image-embedding cache: in-process LRU -> Redis -> compute, each missing key computed once.

The encoder is ~99% of a cold click, so a click on an image anyone has seen before must find
its embedding here. Levels:
- local: a byte-bounded LRU of ImageEmbedding objects in this process (no copy, no decode);
- redis: shared by every web and worker process; values are `ImageEmbedding.to_bytes()`
  (a small header + raw fp16 tensor bytes, never pickle) with a TTL, bounded by Redis' own
  maxmemory + allkeys-lru;
- computed: the caller's `compute()`, run by one thread of one process per key while the
  others wait for its result (see backend.cache.singleflight).
Redis is optional and may fail at any time; then this is a local cache and clicks still work.

The same cache holds a concept engine's image features (`FEATURES`): what is stored is decided
by a `Codec`, everything else (levels, single flight, locks, vetting) is shared.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import torch

from backend.cache.lru import ByteLRU
from backend.cache.redis_link import RedisLink
from backend.cache.singleflight import SingleFlight, try_lock, unlock
from sam_model.common.embedding import ImageEmbedding
from sam_model.concepts.features import ConceptFeatures

Source = Literal["local", "redis", "computed"]


class Sized(Protocol):
    """What the cache reads of a value: the (h, w) of the image it was computed from."""

    original_size: tuple[int, int]


T = TypeVar("T", bound=Sized)


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one kind of value is stored: its Redis bytes (never pickle) and its size in memory."""

    to_bytes: Callable[[T], bytes]
    from_bytes: Callable[[bytes], T]  # ValueError for truncated, corrupt or foreign bytes
    nbytes: Callable[[T], int]


def embedding_nbytes(embedding: ImageEmbedding) -> int:
    """Memory an embedding holds, for the byte-bounded LRU (features dominate; the rest is tiny)."""
    return embedding.features.nbytes + 1024


def _embedding_bytes(embedding: ImageEmbedding) -> bytes:
    # fp16 narrows float features only; integer features (grabcut's uint8 image) keep theirs.
    return embedding.to_bytes(torch.float16 if embedding.features.is_floating_point() else None)


EMBEDDINGS: Codec[ImageEmbedding] = Codec(_embedding_bytes, ImageEmbedding.from_bytes, embedding_nbytes)
# A concept engine's backbone output (sam_model.concepts.features: sizes per engine), fp16 in Redis.
FEATURES: Codec[ConceptFeatures] = Codec(
    lambda features: features.to_bytes(torch.float16), ConceptFeatures.from_bytes, lambda f: f.nbytes + 1024
)


class EmbeddingCache(Generic[T]):
    """Get an image embedding (or, with another codec, any per-image model output) by a stable key
    (model id + image key), computing it at most once."""

    def __init__(
        self,
        local_max_bytes: int,
        redis_url: str = "",
        *,
        ttl_s: int = 7 * 24 * 3600,
        lock_timeout_s: float = 120.0,
        codec: Codec = EMBEDDINGS,
        logger: logging.Logger | None = None,
        key_prefix: str = "sam:emb:",
        poll_interval_s: float = 0.05,
        redis_retry_after_s: float = 5.0,
        check: Callable[[T], None] = lambda embedding: None,
        max_pixels: int = 100_000_000,
        on_reject: Callable[[], None] = lambda: None,
    ):
        """`check` raises ValueError for an embedding the engine could not have made (wrong model,
        shape or dtype); such a Redis value, or one whose original size exceeds `max_pixels`, is a
        miss: `on_reject()` counts it, and it is recomputed and overwritten."""
        self._logger = logger or logging.getLogger(__name__)
        self._local: ByteLRU[T] = ByteLRU(local_max_bytes)
        self._codec = codec
        self._check = check
        self._max_pixels = max_pixels
        self._on_reject = on_reject
        self._link = RedisLink(
            redis_url, name="embedding cache", logger=self._logger, retry_after_s=redis_retry_after_s
        )
        self._flight: SingleFlight[tuple[T, Source]] = SingleFlight()
        self._ttl_s = ttl_s
        self._lock_timeout_s = lock_timeout_s
        self._prefix = key_prefix
        self._poll_interval_s = poll_interval_s

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> tuple[T, Source]:
        """The embedding for key and where it came from; compute() runs only on a miss everywhere.

        The returned object may be shared with other callers: treat it as read-only.

        Callers that join a flight already in progress get the leader's answer and source.
        compute()'s exceptions propagate to every caller waiting on it; nothing is cached then.
        """
        hit = self._local.get(key)
        if hit is not None:
            return hit, "local"
        return self._flight.do(key, lambda: self._load_or_compute(key, compute))

    def get_local(self, key: str) -> T | None:
        """The embedding if this process holds it, else None: never waits on Redis or on a computation,
        so callers can tell a hit from the cold path before they commit a bounded resource to it."""
        return self._local.get(key)

    def local_usage(self) -> tuple[int, int]:
        """(embeddings held in this process, their bytes): what the process level holds now."""
        return len(self._local), self._local.nbytes

    def contains(self, key: str) -> bool:
        """Whether the embedding is cached at any level, without transferring it."""
        if key in self._local:
            return True
        return bool(self._link.call(lambda r: r.exists(self._value_key(key)), 0))

    def close(self) -> None:
        self._link.close()

    def _load_or_compute(self, key: str, compute: Callable[[], T]) -> tuple[T, Source]:
        hit = self._local.get(key)  # the flight that just ended may have filled it
        if hit is not None:
            return hit, "local"
        found = self._fetch_remote(key)
        if found is not None:
            return found, "redis"
        token = secrets.token_hex(16)
        locked = self._try_lock(key, token)
        if locked is False:  # another process is computing it: wait for its value
            found, locked = self._wait_for_peer(key, token)
            if found is not None:
                return found, "redis"
        try:
            embedding = compute()
            self._store(key, embedding)
        finally:
            if locked is True:
                self._link.call(lambda r: unlock(r, self._lock_key(key), token), None)
        return embedding, "computed"

    def _wait_for_peer(self, key: str, token: str) -> tuple[T | None, bool | None]:
        """Poll until the peer's value appears (value, _) or its lock goes (None, True: ours now).

        (None, None): Redis went away or the lock timeout passed; the caller computes unlocked.
        """
        deadline = time.monotonic() + self._lock_timeout_s
        while time.monotonic() < deadline:
            time.sleep(self._poll_interval_s)
            found = self._fetch_remote(key)
            if found is not None:
                return found, None
            locked = self._try_lock(key, token)
            if locked is not False:
                return None, locked
        self._logger.warning(
            "embedding cache: waited %.0f s for another process to compute %r; computing here",
            self._lock_timeout_s,
            key,
        )
        return None, None

    def _try_lock(self, key: str, token: str) -> bool | None:
        """True: we hold the lock; False: someone else does; None: Redis is absent or down."""
        ttl_ms = max(1, int(self._lock_timeout_s * 1000))
        return self._link.call(lambda r: try_lock(r, self._lock_key(key), token, ttl_ms), None)

    def _fetch_remote(self, key: str) -> T | None:
        """The embedding from Redis (also kept locally), or None if absent, unreachable or corrupt."""
        value_key = self._value_key(key)
        raw = self._link.call(lambda r: r.get(value_key), None)
        if raw is None:
            return None
        try:
            embedding = self._codec.from_bytes(raw)
            self._vet(embedding)
        except ValueError as exc:  # truncated, corrupt or foreign bytes, or not what this engine makes
            # Never kept locally: a bad value in the process cache would fail every later click too.
            self._logger.warning(
                "embedding cache: corrupt or unusable value for %r in Redis (%s); recomputing", key, exc
            )
            self._on_reject()
            self._link.call(lambda r: r.delete(value_key), None)
            return None
        self._local.put(key, embedding, self._codec.nbytes(embedding))
        return embedding

    def _vet(self, embedding: T) -> None:
        h, w = embedding.original_size
        if h * w > self._max_pixels:
            raise ValueError(f"original size {w}x{h} is over {self._max_pixels} pixels")
        self._check(embedding)

    def _store(self, key: str, embedding: T) -> None:
        self._local.put(key, embedding, self._codec.nbytes(embedding))
        self._link.call(lambda r: r.set(self._value_key(key), self._codec.to_bytes(embedding), ex=self._ttl_s), None)

    def _value_key(self, key: str) -> str:
        # Keys can be long presigned URLs; a digest keeps Redis keys short and uniform.
        return self._prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()

    def _lock_key(self, key: str) -> str:
        return self._value_key(key) + ":lock"
