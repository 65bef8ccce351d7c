"""A gunicorn worker that serves the app with waitress, so slow clients never hold a request thread.

gunicorn 27's gthread worker hands each new connection to a pool thread, which reads the
request line, headers and (through Flask) the body with blocking reads and no deadline: a
client that trickles its headers one byte at a time holds that thread until it finishes or
disconnects, and THREADS such clients stop the process from answering anything, /health
included. waitress instead reads and buffers whole requests (headers and body, the body
capped at MAX_REQUEST_BYTES) in one non-blocking I/O thread and queues only complete
requests to its THREADS application threads; responses are written back by that I/O thread
too, so a slow reader does not hold a thread either.

gunicorn stays the process manager: WORKERS processes, each loading its own model after
fork, the listening socket, signals, the heartbeat that replaces a hung worker. This is the
same split as uvicorn's gunicorn worker class. See docs/ARCHITECTURE.md ("Slow clients").
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from gunicorn.workers.base import Worker
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from backend.settings import Settings

LOOP_TICK_S = 1.0  # how often the I/O loop checks signals, the header deadline and tells gunicorn it lives
HEADER_DEADLINE_S = 30.0  # a request's line and headers must arrive within this, however they trickle
IDLE_TIMEOUT_S = 60  # a connection that sends nothing for this long is closed (checked every CLEANUP_S)
CLEANUP_S = 10

_ERROR_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large", 501: "not_implemented"}


class _TimedParser(HTTPRequestParser):
    """A request being received, remembering when its first byte came (for HEADER_DEADLINE_S)."""

    def __init__(self, adj: Any):
        super().__init__(adj)
        self.started = time.monotonic()


class _JsonErrorTask(ErrorTask):
    """waitress' own refusals (malformed HTTP, body over the limit) as the app's JSON errors."""

    def execute(self) -> None:
        error = self.request.error
        if error.code == 413:
            limit = self.channel.server.adj.max_request_body_size - 1
            body = {"error": "payload_too_large", "message": f"request body is larger than MAX_REQUEST_BYTES={limit}",
                    "fix": "send fewer tasks per request or raise MAX_REQUEST_BYTES"}
        else:
            body = {"error": _ERROR_CODES.get(error.code, "bad_request"), "message": f"{error.reason}: {error.body}",
                    "fix": "send a well-formed HTTP/1.1 request"}
        data = json.dumps(body).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(data)
        self.write(data)


class _Channel(HTTPChannel):
    parser_class = _TimedParser
    error_task_class = _JsonErrorTask


def create_servers(app: Any, sockets: list[socket.socket], *, threads: int, connection_limit: int,
                   max_request_bytes: int) -> tuple[dict[int, Any], list[BaseWSGIServer]]:
    """waitress servers on already-bound `sockets`: (the I/O loop's socket map, the servers in it)."""
    socket_map: dict[int, Any] = {}
    create_server(
        app, map=socket_map, sockets=sockets, threads=threads, connection_limit=connection_limit,
        channel_timeout=IDLE_TIMEOUT_S, cleanup_interval=CLEANUP_S,
        # Refused before buffering; the app's own limit is `> MAX_REQUEST_BYTES`, waitress' is `>=`.
        max_request_body_size=max_request_bytes + 1,
        asyncore_use_poll=True, ident="sam-backend", expose_tracebacks=False,
    )
    servers = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]
    for server in servers:
        server.channel_class = _Channel
    return socket_map, servers


def serve_once(socket_map: dict[int, Any], timeout: float) -> None:
    """One pass of the I/O loop: accept, read, write whatever is ready within `timeout`."""
    wasyncore.loop(timeout=timeout, use_poll=True, map=socket_map, count=1)


class WaitressWorker(Worker):
    """One gunicorn worker process: waitress' I/O loop on gunicorn's sockets, THREADS app threads."""

    def run(self) -> None:
        socket_map, servers = create_servers(
            self.wsgi, [listener.sock for listener in self.sockets], threads=self.cfg.threads,
            connection_limit=self.cfg.worker_connections, max_request_bytes=Settings.from_env().max_request_bytes)
        while self.alive and self.ppid == os.getppid():
            self.notify()
            serve_once(socket_map, LOOP_TICK_S)
            close_stalled_requests(servers, time.monotonic())
        self._drain(servers, socket_map)

    def _drain(self, servers: list[BaseWSGIServer], socket_map: dict[int, Any]) -> None:
        """Graceful stop: accept nothing new, finish the requests in hand (up to graceful_timeout)."""
        for server in servers:
            server.accepting = False
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and any(
                channel.requests or channel.total_outbufs_len
                for server in servers for channel in list(server.active_channels.values())):
            self.notify()
            serve_once(socket_map, 0.2)
        if servers:
            servers[0].task_dispatcher.shutdown(timeout=1)  # one dispatcher serves every socket
        wasyncore.close_all(socket_map)


def close_stalled_requests(servers: list[BaseWSGIServer], now: float) -> int:
    """Close connections whose current request's headers have not all arrived within HEADER_DEADLINE_S.

    waitress' own idle timeout only catches silent connections; one byte now and then keeps
    a connection (a file descriptor, a slot under worker_connections) open indefinitely.
    """
    closed = 0
    for server in servers:
        for channel in list(server.active_channels.values()):
            parser = channel.request
            if (isinstance(parser, _TimedParser) and not parser.headers_finished
                    and now - parser.started > HEADER_DEADLINE_S and not channel.will_close):
                channel.will_close = True
                closed += 1
    return closed
