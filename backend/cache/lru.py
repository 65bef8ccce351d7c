"""A thread-safe LRU bounded by bytes, not by entry count.

Embeddings are megabytes each and their size depends on the model, so a count bound would
either waste memory or blow it; the caller states each entry's size and the total is capped.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Least-recently-used map whose entries' declared sizes never sum above `max_bytes`.

    An entry larger than `max_bytes` is not stored at all (max_bytes=0 disables the cache).
    With `ttl_s`, entries also expire that many seconds after they were put.
    """

    def __init__(self, max_bytes: int, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[V, int, float]] = OrderedDict()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        return self._nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._live_entry(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return self._live_entry(key) is not None

    def put(self, key: Hashable, value: V, nbytes: int) -> None:
        expires = self._clock() + self._ttl_s if self._ttl_s is not None else float("inf")
        with self._lock:
            self._remove(key)
            if nbytes > self.max_bytes:
                return
            self._entries[key] = (value, nbytes, expires)
            self._nbytes += nbytes
            while self._nbytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._remove(oldest)

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    def _live_entry(self, key: Hashable) -> tuple[V, int, float] | None:
        entry = self._entries.get(key)
        if entry is not None and entry[2] <= self._clock():
            self._remove(key)
            return None
        return entry

    def _remove(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._nbytes -= entry[1]
