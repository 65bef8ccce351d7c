"""Fixtures for the real-Label-Studio tests: one LS per session, real Redis, gunicorn backends, an RQ worker.

Everything is a real process talking HTTP on 127.0.0.1, as in a deployment: LS 1.23.2
(from install_label_studio.sh), `redis-server`, `gunicorn -c gunicorn.conf.py` serving
`_wsgi:app`, and `python -m backend worker`. Two engines:
- grabcut (no weights): masks that follow the drawn objects, for shape checks (polygons);
- SAM "tiny" with random weights saved as a .pth: the real SAM code path and AMG. Random
  weights give arbitrary but deterministic masks, so the tests compare the server's answer
  pixel for pixel with the same predictor run in this process (one torch thread on both
  sides, as the HTTP tests do).

Without LS installed the tests skip, saying how to install it; with REQUIRE_LABEL_STUDIO=1
(set by `make test`) they fail instead, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.integration import support
from tests.integration.support import backend_env, sam_env
from tests.support.redis_server import RedisServer
from tests.support.servers import Backend, Worker

label_studio = support.label_studio  # the session's LS: a fixture tests/e2e shares


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def backends(tmp_path_factory) -> Iterator[list[Backend]]:
    started: list[Backend] = []
    yield started
    for backend in started:
        backend.stop()


@pytest.fixture(scope="session")
def grabcut_backend(label_studio, redis_server, backends, tmp_path_factory) -> Backend:
    """GrabCut reading local files from disk (LOCAL_FILES_DOCUMENT_ROOT shared with LS)."""
    env = backend_env(
        label_studio, redis_server, SAM_ENGINE="grabcut", LOCAL_FILES_DOCUMENT_ROOT=str(label_studio.files_root)
    )
    backend = Backend(env, tmp_path_factory.mktemp("grabcut") / "gunicorn.log")
    backends.append(backend)
    return backend


@pytest.fixture(scope="session")
def sam_backend(label_studio, redis_server, backends, tiny_checkpoint, tmp_path_factory) -> Backend:
    """Tiny SAM without LOCAL_FILES_DOCUMENT_ROOT: local files come through LS's /data/local-files/."""
    env = backend_env(label_studio, redis_server, **sam_env(tiny_checkpoint))
    backend = Backend(env, tmp_path_factory.mktemp("sam") / "gunicorn.log")
    backends.append(backend)
    return backend


@pytest.fixture(scope="session")
def sam_worker(label_studio, redis_server, tiny_checkpoint, tmp_path_factory) -> Iterator[Worker]:
    worker = Worker(
        backend_env(label_studio, redis_server, **sam_env(tiny_checkpoint)),
        tmp_path_factory.mktemp("worker") / "worker.log",
    )
    time.sleep(0.5)
    if worker.proc.poll() is not None:
        raise RuntimeError(f"worker exited at once:\n{worker.log()}")
    yield worker
    worker.stop()
