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

from backend.bulkhead import Bulkhead
from backend.errors import Overloaded

RESERVED_THREADS = 2  # request threads no cold click may take


def cold_slots_for(threads: int) -> int:
    """How many request threads may do cold work at once in a process serving with `threads`."""
    return max(1, threads - RESERVED_THREADS)


def cold_slots(limit: int) -> Bulkhead:
    """The bulkhead cold clicks enter; the one past `limit` gets 503 Overloaded at once."""
    return Bulkhead(
        limit,
        lambda: Overloaded(
            f"all {limit} slots for clicks on uncached images are busy in this process "
            "(image downloads and encodes; a slow image host?)",
            "retry in a few seconds (each download ends within DOWNLOAD_DEADLINE_S); "
            "raise THREADS to allow more at once",
        ),
    )
