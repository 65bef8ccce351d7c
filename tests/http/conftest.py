"""HTTP test fixtures: a fake Label Studio serving task images, real gunicorn backends, real Redis.

The sample requests in tests/fixtures/ls-samples point at an LS host that does not exist here;
`FakeLabelStudio` serves their image paths (and counts every request, so tests can prove a
cached click fetched nothing). Backends are real `gunicorn` processes started from the repo's
gunicorn.conf.py, one per module where possible, because only a real server shows forking,
threads, body limits and logging as production has them.
"""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

from tests.redis_server import RedisServer
from tests.samples import SAMPLES, sample  # noqa: F401 - re-exported for the HTTP tests

REPO = Path(__file__).resolve().parents[2]
LS_TOKEN = "harnesstoken0123456789abcdef0123456789ab"  # the legacy token in setup_request.json


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scene(width: int, height: int, blobs: list[tuple[float, float, float]], seed: int = 0) -> np.ndarray:
    """A dark textured background with bright discs at (x%, y%, radius px): objects to segment."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), (35, 45, 60), np.uint8)
    for i, (xp, yp, radius) in enumerate(blobs):
        colour = [(230, 200, 40), (40, 220, 90), (220, 60, 200)][i % 3]
        cv2.circle(image, (round(xp / 100 * width), round(yp / 100 * height)), int(radius), colour, -1)
    noise = rng.integers(0, 12, image.shape, dtype=np.uint8)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


# The sample tasks' images, drawn with an object under each sample click.
SAMPLE_IMAGES = {
    "/data/upload/1/cd422a2f-up0.png": scene(320, 240, [(16.5, 78.7, 30), (50, 50, 35)], seed=1),
    "/data/upload/1/3b361a25-up1.png": scene(320, 240, [(25, 25, 30)], seed=2),
    "/data/upload/1/06651767-up2.png": scene(352, 240, [(16.1, 79.1, 30)], seed=3),
    "/data/upload/1/5e0c2f11-up3.png": scene(368, 240, [(11.7, 83.5, 28), (88.3, 83.5, 28)], seed=4),
}
TASK4 = {"id": 4, "data": {"image": "/data/upload/1/5e0c2f11-up3.png"}}


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class FakeLabelStudio:
    """Serves images at LS paths, demands LS's token, and counts requests per path."""

    def __init__(self, token: str = LS_TOKEN):
        self.token = token
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.auth_seen: set[str] = set()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.hits[self.path] += 1
                fake.auth_seen.add(self.headers.get("Authorization", ""))
                if self.headers.get("Authorization") != f"Token {fake.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                body = fake.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, image: np.ndarray) -> None:
        self.files[path] = png(image)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Backend:
    """One gunicorn process serving `_wsgi:app` with the given environment."""

    def __init__(self, env: dict[str, str], log_path: Path, auth: tuple[str, str] | None = None):
        self.auth = auth
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO", "BASIC_AUTH"))}
        full_env.update({"PORT": str(self.port), "WORKERS": "1", "THREADS": "8", "LOG_LEVEL": "INFO",
                         "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, **env)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}):\n{self.log()}")
            try:
                health = requests.get(self.url + "/health", timeout=1, auth=self.auth)
                if health.status_code == 200 and health.json().get("model_loaded"):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        output = self.log()  # read before stop() closes the log file
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready:\n{output}")

    def post(self, path: str, body: object, **kw) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=120, auth=self.auth, **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, timeout=30, auth=self.auth, **kw)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics (0 when absent)."""
        text = self.get("/metrics").text
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:]+)(\{.*\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(match.group(3))
        return 0.0

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # quick shutdown; the tests do not need a graceful one
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def fake_ls():
    ls = FakeLabelStudio()
    for path, image in SAMPLE_IMAGES.items():
        ls.add(path, image)
    yield ls
    ls.close()


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def start_backend(tmp_path_factory):
    """Factory: start_backend(env) -> a ready Backend; all are stopped when the module ends."""
    started: list[Backend] = []

    def start(env: dict[str, str], auth: tuple[str, str] | None = None) -> Backend:
        log_path = tmp_path_factory.mktemp("gunicorn") / "server.log"
        backend = Backend(env, log_path, auth)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop()


def ls_env(fake_ls: FakeLabelStudio, **extra: str) -> dict[str, str]:
    return {"LABEL_STUDIO_URL": fake_ls.url, "LABEL_STUDIO_API_KEY": LS_TOKEN, **extra}
