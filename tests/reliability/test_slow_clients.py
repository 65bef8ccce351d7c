"""Slow clients against a real gunicorn (the repo's gunicorn.conf.py, WORKERS=1, THREADS=8).

50 connections trickle their request headers (and 5 their body) one byte at a time and never
finish; 8 clicks need images that a local server sends at 1 byte/s. Meanwhile /health and a
click whose embedding is cached must still answer within 1 s each. Everything is on
127.0.0.1, every loop is bounded, and the slow clients and the slow server stop at the end.
"""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from waitress import wasyncore

from backend.interactive.cold_slots import cold_slots_for
from backend.web.server import (
    HEADER_DEADLINE_S,
    REQUEST_DEADLINE_S,
    close_stalled_requests,
    create_servers,
    serve_once,
    shed_connections,
)
from tests.support.images import png, scene
from tests.support.samples import LS_TOKEN, sample
from tests.support.servers import Backend
from tests.support.timing import ANSWER_WITHIN_S, timed

THREADS = 8
SLOW_HEADER_CONNECTIONS = 50
SLOW_BODY_CONNECTIONS = 5
SLOW_CLICKS = 8
SAME_IMAGE_CLICKS = 10  # more than THREADS, on one image
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


class Tricklers:
    """Connections that send their request one byte per round and never finish it."""

    def __init__(self, url_port: int, headers: int, bodies: int):
        head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
        body_head = (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4000\r\n\r\n"
        )
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
                sock.send(data[index : index + 1])  # an error here fails the test: the server dropped us
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


@pytest.fixture()
def ls():
    server = TrickleLabelStudio()
    yield server
    server.close()


@pytest.fixture()
def backend(ls, tmp_path):
    server = Backend(
        {
            "SAM_ENGINE": "grabcut",
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": LS_TOKEN,
            "THREADS": str(THREADS),
        },
        tmp_path / "gunicorn.log",
    )
    yield server
    server.stop()


def test_health_and_cached_clicks_answer_within_a_second_while_slow_clients_hang(backend, ls):
    warm = requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1), timeout=60)
    assert warm.status_code == 200, warm.text
    slots = cold_slots_for(THREADS)
    assert 0 < slots < THREADS

    tricklers = Tricklers(backend.port, SLOW_HEADER_CONNECTIONS, SLOW_BODY_CONNECTIONS)
    slow_answers: list[requests.Response | Exception] = []

    def slow_click(index: int) -> None:
        try:
            slow_answers.append(
                requests.post(
                    backend.url + "/predict",
                    timeout=120,
                    json=click_body(f"/data/upload/1/slow-{index}.png", 100 + index),
                )
            )
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
        # The clicks past the cold slots were refused at once, with a reason and when to retry.
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
            hit, seconds = timed(
                lambda: requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1), timeout=10)
            )
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


def test_many_clicks_on_one_slow_cold_image_leave_threads_for_health(backend, ls):
    """Clicks on one uncached image share one download; the ones waiting for it hold request
    threads as surely as the one downloading, so waiting takes a cold slot too. The clients
    give up after 0.3 s; the backend's threads do not."""
    warm = requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1), timeout=60)
    assert warm.status_code == 200, warm.text
    slots = cold_slots_for(THREADS)
    path = "/data/upload/1/slow-shared.png"

    def impatient_click(index: int) -> None:
        try:
            requests.post(backend.url + "/predict", json=click_body(path, 200 + index), timeout=0.3)
        except requests.RequestException:
            pass  # gave up, as LS's annotator would reload

    clickers = [threading.Thread(target=impatient_click, args=(i,), daemon=True) for i in range(SAME_IMAGE_CLICKS)]
    try:
        for thread in clickers:
            thread.start()
        for thread in clickers:
            thread.join(5)
        deadline = time.monotonic() + 10
        while backend.log().count("overloaded:") < SAME_IMAGE_CLICKS - slots and time.monotonic() < deadline:
            time.sleep(0.1)
        for _ in range(5):
            health, seconds = timed(lambda: requests.get(backend.url + "/health", timeout=10))
            assert health.status_code == 200 and seconds < ANSWER_WITHIN_S, seconds
        hit, seconds = timed(
            lambda: requests.post(backend.url + "/predict", json=click_body(FAST_IMAGE, 1), timeout=10)
        )
        assert hit.status_code == 200 and seconds < ANSWER_WITHIN_S, (hit.status_code, seconds)
        # The clicks past the cold slots were refused at once (503 + Retry-After, logged); one
        # download served the others.
        assert backend.log().count("overloaded:") == SAME_IMAGE_CLICKS - slots, backend.log()
        assert ls.hits[path] == 1 and ls.sending == 1
    finally:
        ls.close()  # ends the slow download; its clicks then fail with 424
    assert requests.get(backend.url + "/health", timeout=5).status_code == 200


# ---- the waitress worker's own limits, on an in-process server (no gunicorn, no waiting 30 s) ------


def _ok_app(environ, start_response):
    """200 "ok", or for POST the length of the body it read (a chunked body arrives decoded)."""
    body = str(len(environ["wsgi.input"].read())).encode() if environ["REQUEST_METHOD"] == "POST" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


class InProcessServer:
    """The worker's waitress servers on a loopback socket, its I/O loop pumped by the test."""

    def __init__(self, max_request_bytes: int = 1000, connection_limit: int = 100, app=_ok_app, threads: int = 1):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connection_limit = connection_limit
        self.map, self.servers = create_servers(
            app,
            [self.listener],
            threads=threads,
            connection_limit=connection_limit,
            max_request_bytes=max_request_bytes,
        )
        self.shed = 0

    def pump(self, seconds: float = 0.3) -> None:
        """The worker's loop (WaitressWorker.run), with a short tick."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            serve_once(self.map, 0.02)
            close_stalled_requests(self.servers, time.monotonic())
            self.shed += shed_connections(self.servers, self.connection_limit)

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


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", b"413", "payload_too_large"),
        # Not "100 Continue" (which invited the body of a request already refused) but the 413 at once.
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
            b"413",
            "payload_too_large",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n",
            b"413",
            "payload_too_large",
        ),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"400", "bad_request"),
        # A chunk-size line or trailer without its CRLF was kept in memory up to the body limit.
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;x=" + b"a" * 9000, b"400", "bad_request"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + b"a" * 9000,
            b"400",
            "bad_request",
        ),
        # Past Python's 4300-digit int() limit: waitress' parser raised and dropped the connection.
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n", b"400", "bad_request"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 5000 + b"\r\n\r\n", b"400", "bad_request"),
    ],
)
def test_waitress_refusals_are_the_apps_json_errors(in_process, request_bytes, status, code):
    sock = connect(in_process.port, request_bytes)
    head, _, body = read_reply(in_process, sock).partition(b"\r\n\r\n")
    sock.close()
    assert head.startswith(b"HTTP/1.1 " + status) and b"Content-Type: application/json" in head
    reply = json.loads(body)
    assert reply["error"] == code and reply["message"] and reply["fix"]
    if code == "payload_too_large":
        assert "MAX_REQUEST_BYTES=1000" in reply["message"]


def test_a_body_still_trickling_at_the_request_deadline_is_cut_off(in_process):
    """Headers done in time, then one byte now and then: cut REQUEST_DEADLINE_S after the first byte."""
    assert HEADER_DEADLINE_S < REQUEST_DEADLINE_S
    trickler = connect(in_process.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
    idle = connect(in_process.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive
    in_process.pump()
    started = time.monotonic()
    for _ in range(3):  # the body keeps trickling: waitress' idle timeout would never fire
        trickler.sendall(b"a")
        in_process.pump(0.1)
    assert close_stalled_requests(in_process.servers, started + HEADER_DEADLINE_S + 1) == 0, "its headers were in time"
    assert close_stalled_requests(in_process.servers, started + REQUEST_DEADLINE_S + 1) == 1
    assert read_reply(in_process, trickler) == b"", "cut without an answer"
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert read_reply(in_process, idle).count(b"200 OK") == 2, "a connection between requests is not cut"
    trickler.close()
    idle.close()


def test_a_trickling_body_is_cut_at_the_deadline_in_real_time(in_process, monkeypatch):
    """The same with the worker's own loop and clock, the deadline shortened to 1 s."""
    monkeypatch.setattr("backend.web.server.REQUEST_DEADLINE_S", 1.0)
    trickler = connect(in_process.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n")
    started = time.monotonic()
    while not _closed_by_server(trickler, in_process) and time.monotonic() - started < 5:
        trickler.send(b"a")  # a byte every 0.1 s
        in_process.pump(0.1)
    cut_after = time.monotonic() - started
    trickler.close()
    assert 1.0 <= cut_after < 2.5, cut_after


def chunked(body: bytes, size: int) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks) + b"0\r\n\r\n"


@pytest.mark.parametrize("chunk_size", [1, 100, 999])
def test_chunked_bodies_are_limited_by_their_decoded_size(in_process, chunk_size):
    """MAX_REQUEST_BYTES=1000: 1000 bytes pass however they are chunked, 1001 do not.

    waitress counted the chunk framing toward its limit: 999 bytes in 100-byte chunks were a 413.
    """
    head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    sock = connect(in_process.port, head + chunked(b"a" * 1000, chunk_size))
    reply = read_reply(in_process, sock)
    sock.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"\r\n\r\n1000"), reply[-200:]

    sock = connect(in_process.port, head + chunked(b"a" * 1001, chunk_size))
    head_out, _, body = read_reply(in_process, sock).partition(b"\r\n\r\n")
    sock.close()
    assert head_out.startswith(b"HTTP/1.1 413") and "MAX_REQUEST_BYTES=1000" in json.loads(body)["message"]


@pytest.mark.parametrize(
    "framing",
    [
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
    ],
)
def test_ambiguous_framing_is_a_400_that_closes_the_connection(in_process, framing):
    """RFC 9112 section 6: the server must close the connection (a second reader could frame it otherwise)."""
    sock = connect(in_process.port, framing + b"GET /pipelined HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = read_reply(in_process, sock)
    closed = _closed_by_server(sock, in_process)
    sock.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"400" and json.loads(body)["error"] == "bad_request", reply
    assert closed, "one answer, then the connection closed: the pipelined request is not read"


def _waiting_app(release: threading.Event):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)
        return _ok_app(environ, start_response)

    return app


def test_near_the_connection_limit_the_oldest_unfinished_requests_are_shed():
    """limit 40: 60 silent and trickling connections; /health still gets in, working clients stay."""
    release = threading.Event()
    server = InProcessServer(connection_limit=40, app=_waiting_app(release), threads=2)
    socks: list[socket.socket] = []
    try:
        keep_alive = connect(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        server.pump()
        assert keep_alive.recv(1000).startswith(b"HTTP/1.1 200")
        serving = connect(server.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")  # held in the app
        server.pump()
        for index in range(60):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            if index % 3:  # two in three trickle a request, one in three says nothing
                sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" if index % 2 else b"GET")
            socks.append(sock)
            server.pump(0.02)
        server.pump()
        health, seconds = timed(lambda: read_reply(server, connect(server.port, b"GET /health HTTP/1.0\r\n\r\n")))
        assert health.startswith(b"HTTP/1.0 200") and seconds < ANSWER_WITHIN_S, (health, seconds)
        assert server.shed >= 60 + 2 - 40 * 0.9, server.shed
        # The oldest unfinished were shed, the youngest are still open.
        assert _closed_by_server(socks[0], server) and not _closed_by_server(socks[-1], server)
        # The idle keep-alive client and the request being served were not touched.
        keep_alive.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_reply(server, keep_alive).startswith(b"HTTP/1.1 200")
        release.set()
        assert read_reply(server, serving).startswith(b"HTTP/1.1 200")
    finally:
        release.set()
        for sock in socks:
            sock.close()
        server.close()


def _closed_by_server(sock: socket.socket, server: InProcessServer) -> bool:
    sock.setblocking(False)
    server.pump(0.05)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
