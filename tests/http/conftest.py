"""HTTP test fixtures: a fake Label Studio serving the sample tasks' images, real gunicorn backends, real Redis.

The parts live in tests/support (fake_ls, servers, redis_server, samples); this file only
turns them into module-scoped fixtures, one backend process per module where possible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fake_ls import FakeLabelStudio
from tests.support.redis_server import RedisServer
from tests.support.samples import SAMPLE_IMAGES
from tests.support.servers import Backend


@pytest.fixture(scope="module")
def fake_ls() -> Iterator[FakeLabelStudio]:
    ls = FakeLabelStudio()
    for path, image in SAMPLE_IMAGES.items():
        ls.add(path, image)
    yield ls
    ls.close()


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
