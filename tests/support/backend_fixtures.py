"""Module-scoped fixtures for folders whose tests share processes: one redis-server, gunicorn backends on demand.

A conftest imports them (`from tests.support.backend_fixtures import redis_server, start_backend`)
to make them that folder's fixtures; they override tests/conftest.py's per-test redis_server, so
a module's backends and their Redis live as long as the module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.redis_server import RedisServer
from tests.support.servers import Backend


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def start_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Backend]]:
    """Factory: start_backend(env) -> a ready Backend; all are stopped when the module ends."""
    started: list[Backend] = []

    def start(env: dict[str, str], auth: tuple[str, str] | None = None) -> Backend:
        backend = Backend(env, tmp_path_factory.mktemp("gunicorn") / "server.log", auth)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()
