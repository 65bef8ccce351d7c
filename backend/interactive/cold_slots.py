"""A bulkhead for cold clicks: work on an uncached image may hold some request threads, never all.

A click whose embedding this process does not hold may wait on Redis, on another thread's
or process's encode of the same image (up to EMBEDDING_LOCK_TIMEOUT_S), on the image host
(up to DOWNLOAD_DEADLINE_S), on the decode and on the encoder, all on its request thread.
Without a bound, THREADS such clicks (even on one slow image: they join one computation)
leave nothing for /health or for clicks whose embedding is cached. So each process lets at
most THREADS - RESERVED_THREADS request threads do cold work at once and refuses the next
one at once with 503 + Retry-After: waiting for a slot would itself hold a thread. The
warm-up thread and RQ workers are not request threads: they never take a slot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from backend.errors import Overloaded

RESERVED_THREADS = 2  # request threads no cold click may take


def cold_slots_for(threads: int) -> int:
    """How many request threads may do cold work at once in a process serving with `threads`."""
    return max(1, threads - RESERVED_THREADS)


class ColdSlots:
    """At most `limit` holders at once; `slot()` raises Overloaded instead of waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise Overloaded(
                f"all {self.limit} slots for clicks on uncached images are busy in this process "
                "(image downloads and encodes; a slow image host?)",
                "retry in a few seconds (each download ends within DOWNLOAD_DEADLINE_S); "
                "raise THREADS to allow more at once",
            )
        try:
            yield
        finally:
            self._free.release()
