"""A Redis connection that fails soft: Redis speeds things up, it is never required.

When Redis dies or is unreachable every call returns its default at once instead of raising,
the outage is logged once (not per request), and one caller probes again after a backoff;
when a probe succeeds the recovery is logged. Short socket timeouts keep a dead or
blackholed Redis from stalling clicks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

T = TypeVar("T")


def redacted(url: str) -> str:
    """host:port/db of a Redis URL, without the password, for log lines."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or 6379}{parts.path}"


class RedisLink:
    """Runs operations on Redis, or returns their default while Redis is absent or down."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        logger: logging.Logger,
        retry_after_s: float = 5.0,
        connect_timeout_s: float = 0.5,
        socket_timeout_s: float = 2.0,
    ):
        self._name = name
        self._logger = logger
        self._retry_after_s = retry_after_s
        self._where = redacted(url) if url else ""
        # One immediate retry replaces a pooled connection that went stale across a restart;
        # no backoff inside redis-py: our own backoff decides when to try again.
        self._client = (
            redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=socket_timeout_s,
                retry=Retry(NoBackoff(), 1),
            )
            if url
            else None
        )
        self._lock = threading.Lock()
        self._down = False
        self._outages = 0
        self._retry_at = 0.0

    @property
    def configured(self) -> bool:
        return self._client is not None

    @property
    def down(self) -> bool:
        return self._down

    def call(self, op: Callable[[redis.Redis], T], default: T) -> T:
        """`op(client)`, or `default` when Redis is not configured, in backoff, or fails now."""
        client, outages_seen = self._client_for_call()
        if client is None:
            return default
        try:
            result = op(client)
        except (redis.RedisError, OSError) as exc:
            self._mark_down(exc)
            return default
        if self._down:
            self._mark_up(outages_seen)
        return result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _client_for_call(self) -> tuple[redis.Redis | None, int]:
        with self._lock:
            if self._client is None or not self._down:
                return self._client, self._outages
            now = time.monotonic()
            if now < self._retry_at:
                return None, self._outages
            # This caller is the probe; everyone else keeps skipping Redis until it reports.
            self._retry_at = now + self._retry_after_s
            return self._client, self._outages

    def _mark_down(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + self._retry_after_s
            if self._down:
                return
            self._down = True
            self._outages += 1
        self._logger.warning(
            "%s: Redis at %s unavailable (%s: %s); continuing without it, retrying every %.0f s",
            self._name,
            self._where,
            type(exc).__name__,
            exc,
            self._retry_after_s,
        )

    def _mark_up(self, outages_seen: int) -> None:
        with self._lock:
            # A call that began before the outage was noticed proves nothing about now.
            if not self._down or outages_seen != self._outages:
                return
            self._down = False
        self._logger.info("%s: Redis at %s is reachable again", self._name, self._where)
