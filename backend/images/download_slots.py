"""A bulkhead for image downloads: slow image hosts may hold some request threads, never all.

A click whose embedding is not cached downloads its image on the request thread, and a slow
host can keep that thread for up to DOWNLOAD_DEADLINE_S. Without a bound, THREADS such
clicks leave nothing for /health or for clicks whose embedding is cached. So each process
lets at most THREADS - RESERVED_THREADS image loads run at once and refuses the next one at
once with 503 + Retry-After: waiting for a slot would itself hold a thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from backend.errors import Overloaded

RESERVED_THREADS = 2  # request threads no image download may take


def download_slots_for(threads: int) -> int:
    """How many image loads may run at once in a process serving with `threads` request threads."""
    return max(1, threads - RESERVED_THREADS)


class DownloadSlots:
    """At most `limit` holders at once; `slot()` raises Overloaded instead of waiting."""

    def __init__(self, limit: int):
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._free.acquire(blocking=False):
            raise Overloaded(
                f"{self.limit} image downloads are already in progress in this process (a slow image host?)",
                "retry in a few seconds (each download ends within DOWNLOAD_DEADLINE_S); "
                "raise THREADS to allow more downloads at once",
            )
        try:
            yield
        finally:
            self._free.release()
