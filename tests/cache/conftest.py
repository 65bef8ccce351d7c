"""`redis_server`: a fresh real redis-server per test (see tests/redis_server.py).

Other test folders can reuse it with `from tests.cache.conftest import redis_server` in
their own conftest.py.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server
