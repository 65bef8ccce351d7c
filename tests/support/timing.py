"""Latency under load: how long one call takes, and the bar a backend's quick answers must clear."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# /health and a cache-hit click must answer within this while slow or silent clients hold connections.
ANSWER_WITHIN_S = 1.0


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """`call()`'s result and the seconds it took (monotonic clock)."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started
