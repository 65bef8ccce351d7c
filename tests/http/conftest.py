"""HTTP test fixtures: a fake Label Studio serving the sample tasks' images, real gunicorn backends, real Redis.

The parts live in tests/support (fake_ls, servers, redis_server, samples); this file only
turns them into module-scoped fixtures, one backend process per module where possible.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.fake_ls import FakeLabelStudio, ls_env
from tests.support.images import png, scene
from tests.support.net import free_port
from tests.support.redis_server import RedisServer
from tests.support.samples import LS_TOKEN, SAMPLE_IMAGES, sample
from tests.support.servers import REPO, Backend

# Names the test files being edited in parallel still import from here; drop this (and the
# imports only it uses) once `grep -rn "http.conftest import" tests bench` finds nothing.
__all__ = ["LS_TOKEN", "REPO", "SAMPLE_IMAGES", "Backend", "FakeLabelStudio", "free_port", "ls_env", "png", "sample",
           "scene"]


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
