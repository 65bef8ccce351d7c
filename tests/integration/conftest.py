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
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.http.conftest import Backend
from tests.integration.label_studio import INSTALL_SCRIPT, LabelStudio, installed, ls_venv
from tests.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[2]

# The captured project's config (ls-samples/setup_request.json): a brush output, smart
# keypoints and smart rectangles as prompts, two labels.
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Banana" background="#FF0000"/><Label value="Orange" background="#0d14d3"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Banana" smart="true" background="#000000" showInline="true"/><Label value="Orange" smart="true" background="#000000" showInline="true"/></KeyPointLabels>
  <RectangleLabels name="tag3" toName="image" smart="true"><Label value="Banana" background="#000000" showInline="true"/><Label value="Orange" background="#000000" showInline="true"/></RectangleLabels>
</View>"""

POLYGON_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <PolygonLabels name="poly" toName="image"><Label value="Banana" background="#FF0000"/><Label value="Orange" background="#0d14d3"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="Banana" smart="true"/><Label value="Orange" smart="true"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Banana"/><Label value="Orange"/></RectangleLabels>
</View>"""


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



def backend_env(ls: LabelStudio, redis_server: RedisServer, **extra: str) -> dict[str, str]:
    """What an operator sets for a backend next to this LS (README: connecting LS)."""
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.token,
        "REDIS_URL": redis_server.url,
        "JOB_RETRIES": "1",
        **extra,
    }


def sam_env(checkpoint: Path) -> dict[str, str]:
    return {"SAM_ENGINE": "sam", "SAM_MODEL": "tiny", "SAM_CHECKPOINT": str(checkpoint), "SAM_DEVICE": "cpu"}


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


class Worker:
    """`python -m backend worker`: an RQ worker process with the backend's environment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO"))}
        full_env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}, **env)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "worker"],
            cwd=REPO,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # RQ's warm shutdown: finish the job, then exit
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


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
