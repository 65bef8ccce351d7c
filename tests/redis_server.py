"""Moved to tests/support/redis_server.py; this name stays only for the test files being edited in parallel.

Delete it once nothing imports `tests.redis_server` (grep -rn "tests.redis_server" tests bench).
"""
from tests.support.redis_server import RedisServer  # noqa: F401
