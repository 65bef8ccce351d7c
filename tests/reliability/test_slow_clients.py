"""Slow clients against a real gunicorn (the repo's gunicorn.conf.py, WORKERS=1, THREADS=8).

50 connections trickle their request headers (and 5 their body) one byte at a time and never
finish; 8 clicks need images that a local server sends at 1 byte/s. Meanwhile /health and a
click whose embedding is cached must still answer within 1 s each. Everything is on
127.0.0.1, every loop is bounded, and the slow clients and the slow server stop at the end.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from waitress import wasyncore

from backend.images.download_slots import download_slots_for
from backend.web.server import (
    HEADER_DEADLINE_S,
    close_stalled_requests,
    create_servers,
    serve_once,
)
from tests.http.conftest import LS_TOKEN, free_port, png, sample, scene

ROOT = Path(__file__).resolve().parents[2]
THREADS = 8
SLOW_HEADER_CONNECTIONS = 50
SLOW_BODY_CONNECTIONS = 5
SLOW_CLICKS = 8
ANSWER_WITHIN_S = 1.0
TRICKLE_EVERY_S = 0.5
TRICKLE_ROUNDS = 200  # the trickler stops by itself after this many rounds (100 s) even if not told
SLOW_IMAGE_BYTES = 100_000  # at 1 byte/s: never finishes during the test
FAST_IMAGE = "/data/upload/1/fast.png"
INTERACTIVE = sample("predict_interactive_request.json")


class TrickleLabelStudio:
    """Serves FAST_IMAGE whole and any /data/upload/1/slow-* path at 1 byte/s until closed."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.fast = png(scene(320, 240, [(50, 50, 35)], seed=11))
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.sending = 0  # slow downloads in progress
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner.lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                if self.headers.get("Authorization") != f"Token {LS_TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                slow = self.path.startswith("/data/upload/1/slow-")
                body = owner.fast if self.path == FAST_IMAGE else b""
                self.send_response(200 if slow or body else 404)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(SLOW_IMAGE_BYTES if slow else len(body)))
                self.end_headers()
                if not slow:
                    self.wfile.write(body)
                    return
                with owner.lock:
                    owner.sending += 1
                try:
                    for _ in range(SLOW_IMAGE_BYTES):
                        if owner.stop.wait(1.0):
                            break
                        self.wfile.write(b"\x89")
                        self.wfile.flush()
                except OSError:
                    pass
                finally:
                    with owner.lock:
                        owner.sending -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


class Gunicorn:
    """gunicorn from the repo's config, bound to 127.0.0.1 only."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO", "BASIC_AUTH"))}
        full_env.update({"PORT": str(self.port), "WORKERS": "1", "THREADS": str(THREADS), "OMP_NUM_THREADS": "1",
                         "PYTHONUNBUFFERED": "1", **env})
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{self.port}"],
                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            try:
                if requests.get(self.url + "/health", timeout=1).json().get("model_loaded"):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"gunicorn did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Tricklers:
    """Connections that send their request one byte per round and never finish it."""

    def __init__(self, url_port: int, headers: int, bodies: int):
        head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
        body_head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 4000\r\n\r\n")
        self.stop = threading.Event()
        self.conns: list[tuple[socket.socket, bytes]] = []
        for _ in range(headers):
            self.conns.append((socket.create_connection(("127.0.0.1", url_port), timeout=5), head))
        for _ in range(bodies):
            sock = socket.create_connection(("127.0.0.1", url_port), timeout=5)
            sock.sendall(body_head)  # headers complete, then the body trickles
            self.conns.append((sock, b'{"tasks": "' + b"a" * 3000))
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for index in range(TRICKLE_ROUNDS):
            if self.stop.wait(TRICKLE_EVERY_S):
                return
            for sock, data in self.conns:
                sock.send(data[index:index + 1])  # an error here fails the test: the server dropped us
            self.rounds = index + 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock, _ in self.conns:
            sock.close()


def click_body(path: str, task_id: int) -> dict:
    body = copy.deepcopy(INTERACTIVE)
    body["tasks"] = [{"id": task_id, "data": {"image": path}}]
    return body


def timed(call) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


@pytest.fixture()
def ls():
    server = TrickleLabelStudio()
    yield server
    server.close()


@pytest.fixture()
def backend(ls, tmp_path):
    server = Gunicorn({"SAM_ENGINE": "grabcut", "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": LS_TOKEN},
                      tmp_path / "gunicorn.log")
    yield server
    server.stop()


def test_health_and_cached_clicks_answer_within_a_second_while_slow_clients_hang(backend, ls):
    warm = requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1), timeout=60)
    assert warm.status_code == 200, warm.text
    slots = download_slots_for(THREADS)
    assert 0 < slots < THREADS

    tricklers = Tricklers(backend.port, SLOW_HEADER_CONNECTIONS, SLOW_BODY_CONNECTIONS)
    slow_answers: list[requests.Response | Exception] = []

    def slow_click(index: int) -> None:
        try:
            slow_answers.append(requests.post(backend.url + "/predict", timeout=120,
                                              json=click_body(f"/data/upload/1/slow-{index}.png", 100 + index)))
        except requests.RequestException as exc:
            slow_answers.append(exc)

    clickers = [threading.Thread(target=slow_click, args=(i,), daemon=True) for i in range(SLOW_CLICKS)]
    try:
        for thread in clickers:
            thread.start()
        deadline = time.monotonic() + 30
        while (ls.sending < slots or len(slow_answers) < SLOW_CLICKS - slots) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ls.sending == slots, f"{ls.sending} slow downloads in progress, expected {slots}\n{backend.log()}"
        # The clicks past the download slots were refused at once, with a reason and when to retry.
        refused = [r for r in slow_answers if isinstance(r, requests.Response)]
        assert len(refused) == SLOW_CLICKS - slots, slow_answers
        for response in refused:
            assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
            assert response.json()["error"] == "overloaded" and "image downloads" in response.json()["message"]
        time.sleep(2 * TRICKLE_EVERY_S)  # the tricklers have sent a few more bytes by now
        assert tricklers.rounds >= 2

        for _ in range(5):
            health, seconds = timed(lambda: requests.get(backend.url + "/health", timeout=10))
            assert health.status_code == 200 and seconds < ANSWER_WITHIN_S, seconds
        hits_before = ls.hits[FAST_IMAGE]
        for _ in range(3):
            hit, seconds = timed(lambda: requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1),
                                                       timeout=10))
            assert hit.status_code == 200 and seconds < ANSWER_WITHIN_S, (hit.status_code, seconds)
            assert hit.json()["results"][0]["result"], "a cache-hit click still returns its mask"
        assert ls.hits[FAST_IMAGE] == hits_before, "the clicks were cache hits"
        assert ls.sending == slots and tricklers.thread.is_alive(), "the slow clients were still hanging"
    finally:
        tricklers.close()
        ls.close()  # ends the slow downloads; their clicks then fail with 424
        for thread in clickers:
            thread.join(30)
    assert all(not thread.is_alive() for thread in clickers)
    assert requests.get(backend.url + "/health", timeout=5).status_code == 200


# ---- the waitress worker's own limits, on an in-process server (no gunicorn, no waiting 30 s) ------


def _ok_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


class InProcessServer:
    """The worker's waitress servers on a loopback socket, its I/O loop pumped by the test."""

    def __init__(self, max_request_bytes: int = 1000):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.map, self.servers = create_servers(_ok_app, [self.listener], threads=1, connection_limit=100,
                                                max_request_bytes=max_request_bytes)

    def pump(self, seconds: float = 0.3) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            serve_once(self.map, 0.02)

    def close(self) -> None:
        self.servers[0].task_dispatcher.shutdown(timeout=1)
        wasyncore.close_all(self.map)


@pytest.fixture()
def in_process():
    server = InProcessServer()
    yield server
    server.close()


def connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    return sock


def read_reply(server: InProcessServer, sock: socket.socket) -> bytes:
    """Pump the loop until the server has answered and closed, or 5 s passed."""
    sock.setblocking(False)
    reply = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        server.pump(0.05)
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            continue
        if not chunk:
            break
        reply += chunk
    return reply


def test_headers_still_trickling_after_the_deadline_are_cut_off(in_process):
    stalled = connect(in_process.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    idle = connect(in_process.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive
    in_process.pump()
    assert close_stalled_requests(in_process.servers, time.monotonic()) == 0, "not before the deadline"
    assert close_stalled_requests(in_process.servers, time.monotonic() + HEADER_DEADLINE_S + 1) == 1
    assert read_reply(in_process, stalled) == b"", "the stalled connection is closed without an answer"
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_reply(in_process, idle).count(b"200 OK") == 2, "a finished request is not cut off"
    stalled.close()
    idle.close()


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"413", "payload_too_large"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400", "bad_request"),
])
def test_waitress_refusals_are_the_apps_json_errors(in_process, request_bytes, status, code):
    sock = connect(in_process.port, request_bytes)
    head, _, body = read_reply(in_process, sock).partition(b"\r\n\r\n")
    sock.close()
    assert head.startswith(b"HTTP/1.1 " + status) and b"Content-Type: application/json" in head
    reply = json.loads(body)
    assert reply["error"] == code and reply["message"] and reply["fix"]
    if code == "payload_too_large":
        assert "MAX_REQUEST_BYTES=1000" in reply["message"]
