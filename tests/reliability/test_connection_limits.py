"""More silent and trickling connections than a worker may hold, against a real gunicorn.

gunicorn.conf.py's worker_connections, lowered to 50 through GUNICORN_CMD_ARGS: 80 clients
connect and then say nothing or send their request a byte at a time, reconnecting when cut
(as a flood would). Before shedding, the worker held its 50 connections until their clients
gave up and stopped accepting: /health waited in the listen backlog. Now the oldest
unfinished requests are shed and /health answers within a second, while a keep-alive client
that was idle through it all keeps its connection. Everything is on 127.0.0.1; the flood
is bounded in rounds and stops at the end.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from tests.support.servers import Backend
from tests.support.timing import ANSWER_WITHIN_S, timed

LIMIT = 50
FLOOD = 80  # more than LIMIT
EVERY_S = 0.2
ROUNDS = 300  # the flood stops by itself after this many rounds (60 s)


class Flood:
    """FLOOD connections: one in four silent, the rest trickling headers or a body; reconnect when cut."""

    REQUESTS = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000,
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000\r\n\r\n" + b"a" * 4000,
    )

    def __init__(self, port: int):
        self.port = port
        self.conns = [self._open() for _ in range(FLOOD)]
        self.sent = [0] * FLOOD
        self.cut = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        for _ in range(ROUNDS):
            if self.stop.wait(EVERY_S):
                return
            for index, sock in enumerate(self.conns):
                try:
                    if index % 4 == 0:  # silent: only notice being closed
                        if sock.recv(1) == b"":
                            raise ConnectionResetError
                    else:
                        data = self.REQUESTS[index % 2]
                        sock.send(data[self.sent[index] : self.sent[index] + 1])
                        self.sent[index] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    sock.close()
                    self.cut += 1
                    self.sent[index] = 0
                    self.conns[index] = self._open()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.conns:
            sock.close()


def http_get(sock: socket.socket, path: str) -> bytes:
    """One keep-alive GET on `sock`: the status line and body of the answer."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"<closed>"
        assert not data.endswith(b"<closed>"), data
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0] + b" " + body


@pytest.fixture()
def backend(tmp_path):
    server = Backend(
        {"SAM_ENGINE": "grabcut", "GUNICORN_CMD_ARGS": f"--worker-connections {LIMIT}"}, tmp_path / "gunicorn.log"
    )
    yield server
    server.stop()


def test_health_gets_in_while_more_slow_connections_than_the_limit_are_open(backend):
    keep_alive = socket.create_connection(("127.0.0.1", backend.port), timeout=5)
    assert http_get(keep_alive, "/health").startswith(b"HTTP/1.1 200")
    flood = Flood(backend.port)
    try:
        deadline = time.monotonic() + 20
        while flood.cut < FLOOD - LIMIT and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(5):
            health, seconds = timed(lambda: requests.get(backend.url + "/health", timeout=5))
            assert health.status_code == 200 and seconds < ANSWER_WITHIN_S, seconds
            time.sleep(0.2)
        assert flood.cut >= FLOOD - LIMIT and flood.thread.is_alive(), "the flood was still on, being shed"
        assert http_get(keep_alive, "/health").startswith(b"HTTP/1.1 200"), (
            "the idle keep-alive client kept its connection"
        )
    finally:
        flood.close()
        keep_alive.close()
    assert "shed" in backend.log() and f"worker_connections={LIMIT}" in backend.log()
