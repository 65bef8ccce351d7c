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

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.integration.label_studio import INSTALL_SCRIPT, LabelStudio, installed, ls_venv
from tests.integration.support import BRUSH_CONFIG, POLYGON_CONFIG, backend_env, sam_env
from tests.support.redis_server import RedisServer
from tests.support.servers import REPO, Backend, Worker

# Names tests/integration/test_auto_annotate.py (being edited in parallel) still imports from here;
# it should take them from tests.integration.support and tests.support.servers, then this goes.
__all__ = ["BRUSH_CONFIG", "POLYGON_CONFIG", "REPO", "backend_env", "sam_env"]


def _say(config: pytest.Config, line: str) -> None:
    """A line on the terminal even with output captured: startup times are worth seeing in CI logs."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory, request) -> Iterator[LabelStudio]:
    if not installed():
        why = f"Label Studio is not installed in {ls_venv()}: run `bash {INSTALL_SCRIPT.relative_to(REPO)}`"
        if os.environ.get("REQUIRE_LABEL_STUDIO") == "1":  # make test sets it: CI must never skip these
            pytest.fail(why, pytrace=False)
        pytest.skip(why + " (make test does)")
    base = tmp_path_factory.mktemp("label-studio")
    data_dir, files_root = base / "data", base / "files"
    data_dir.mkdir()
    files_root.mkdir()
    template = ls_venv() / "template-data" / "label_studio.sqlite3"
    if template.is_file():  # an already-migrated, empty database: LS starts without migrating
        shutil.copyfile(template, data_dir / "label_studio.sqlite3")
    ls = LabelStudio(data_dir, files_root, base / "label-studio.log")
    ls.start()
    _say(
        request.config,
        f"\nLabel Studio {ls.url} ready in {ls.startup_s:.1f} s "
        f"({'template database' if template.is_file() else 'migrated from scratch'})",
    )
    yield ls
    ls.stop()


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
