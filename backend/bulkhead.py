"""A bulkhead: at most N holders of a resource at once, and the next one refused at once.

Used where waiting would itself hold a request thread (cold clicks, calls to a hung job
Redis): refusing with a 503 at once keeps threads free for /health and for cached clicks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Bulkhead:
    """At most `limit` holders at once; `enter()` raises `refusal()` instead of waiting."""

    def __init__(self, limit: int, refusal: Callable[[], Exception]):
        self.limit = limit
        self._refusal = refusal
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def enter(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise self._refusal()
        try:
            yield
        finally:
            self._free.release()
