"""Compute each missing key once, however many callers ask for it at the same moment.

Two annotators opening the same image (or one annotator clicking while the warm-up for that
image is still encoding) must not run the ~20 s encoder twice. In-process callers share one
future per key; across processes a Redis lock (SET NX PX + compare-and-delete) elects one
computer while the others wait for its result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

import redis

T = TypeVar("T")

# Delete the lock only if it still holds our token: never release a lock that expired and
# was taken by another process in the meantime.
_UNLOCK_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class SingleFlight(Generic[T]):
    """Per-key in-process deduplication: concurrent do(key, fn) calls run fn once and share its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, Future[T]] = {}

    def do(self, key: Hashable, fn: Callable[[], T]) -> T:
        """Run fn (or join the run already in flight for key); its exception reaches every caller."""
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if leader:
                future = self._calls[key] = Future()
        if not leader:
            return future.result()
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            with self._lock:
                del self._calls[key]


def try_lock(client: redis.Redis, key: str, token: str, ttl_ms: int) -> bool:
    """Take the cross-process lock if free; it expires after ttl_ms even if its holder dies."""
    return bool(client.set(key, token, nx=True, px=ttl_ms))


def unlock(client: redis.Redis, key: str, token: str) -> bool:
    """Release the lock only if we still hold it (our token); True when it was ours."""
    return bool(client.eval(_UNLOCK_SCRIPT, 1, key, token))
