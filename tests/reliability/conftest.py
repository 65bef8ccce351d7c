"""Fixtures for the reliability tests: real gunicorn backends, real redis-server, a fake LS API.

The backend launcher and image helpers come from tests/http (a colleague's, reused as is);
what is added here is a fake LS that also speaks the prediction API (fake_ls.py) and a
tripwire listener that proves refused URLs were never connected to.
"""
from __future__ import annotations

import socket
import threading

import pytest

from tests.http.conftest import redis_server, start_backend  # noqa: F401 - shared module-scoped fixtures


class Tripwire:
    """A TCP listener on 127.0.0.1 that only counts connections: the backend must never reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def tripwire():
    wire = Tripwire()
    yield wire
    wire.close()


