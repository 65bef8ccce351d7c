"""A gunicorn worker that serves the app with waitress, so slow clients never hold a request thread.

gunicorn 27's gthread worker hands each new connection to a pool thread, which reads the
request line, headers and (through Flask) the body with blocking reads and no deadline: a
client that trickles its headers one byte at a time holds that thread until it finishes or
disconnects, and THREADS such clients stop the process from answering anything, /health
included. waitress instead reads and buffers whole requests (headers and body, the body
capped at MAX_REQUEST_BYTES) in one non-blocking I/O thread and queues only complete
requests to its THREADS application threads; responses are written back by that I/O thread
too, so a slow reader does not hold a thread either.

What waitress leaves open, this module closes: a request still arriving after its deadline
is cut however it trickles, and near the connection limit the oldest unfinished requests
are shed so that new clients (/health) still get in; chunked bodies are limited by their
decoded size, and ambiguous framing is a 400 that closes the connection.

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
from waitress.parser import HTTPRequestParser, ParsingError
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.utilities import BadRequest, RequestEntityTooLarge

from backend.settings import Settings

LOOP_TICK_S = 1.0  # how often the I/O loop checks signals and deadlines and tells gunicorn it lives
HEADER_DEADLINE_S = 30.0  # a request's line and headers must arrive within this, however they trickle
# The whole request (headers and body) must arrive within this of its first byte. LS, the only
# client, waits 100 s for /predict: a body still arriving after 60 s leaves it too little time for
# the answer anyway. 60 s carries the default MAX_REQUEST_BYTES (10 MiB) at 1.4 Mbit/s; LS's
# bodies are kilobytes, which arrive in well under a second even on a slow link.
REQUEST_DEADLINE_S = 60.0
IDLE_TIMEOUT_S = 60  # a connection that sends nothing for this long is closed (checked every CLEANUP_S)
CLEANUP_S = 10
# Shedding starts when open connections reach SHED_AT of the limit and closes the oldest
# unfinished requests until SHED_TO of it is open: room for new clients before waitress would
# stop accepting, and not one sweep per new connection under a flood.
SHED_AT = 0.9
SHED_TO = 0.8
# A chunked body's framing (size lines, CRLFs) is at most its payload for chunks of 5 bytes or
# more; waitress counts framing toward its limit, so it gets twice the limit plus this, and
# _Parser holds the decoded body to MAX_REQUEST_BYTES exactly.
FRAMING_SLACK_BYTES = 64 * 1024
# waitress keeps an unfinished chunk-size line (extensions and all) and the trailer in memory
# until their CRLF, bounded only by the framing bound above: tens of MiB per connection.
MAX_CHUNK_LINE_BYTES = 8 * 1024

_ERROR_CODES = {400: "bad_request", 413: "payload_too_large", 431: "headers_too_large", 501: "not_implemented"}


class _Parser(HTTPRequestParser):
    """A request being received: when its first byte came, its decoded body limit, strict framing."""

    def __init__(self, adj: Any, max_body: int):
        super().__init__(adj)
        self.started = time.monotonic()
        self.max_body = max_body

    def parse_header(self, header_plus: bytes) -> None:
        """waitress' parsing, plus the framing RFC 9112 (section 6) calls an error.

        Content-Length with Transfer-Encoding, or Transfer-Encoding in HTTP/1.0, can be read two
        ways by two servers (request smuggling); waitress picks one and keeps the connection.
        A ParsingError here becomes a 400 that closes it.
        """
        try:
            super().parse_header(header_plus)
        except ValueError as exc:  # int() of a Content-Length longer than Python's 4300 digits
            raise ParsingError("Content-Length is invalid") from exc
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("both Content-Length and Transfer-Encoding")
        if "TRANSFER_ENCODING" in self.headers:  # waitress pops it in HTTP/1.1 only
            raise ParsingError(f"Transfer-Encoding in an HTTP/{self.version} request")

    def received(self, data: bytes) -> int:
        """waitress' receiving, with MAX_REQUEST_BYTES applied to the body itself, not to its framing."""
        consumed = super().received(data)
        chunks = self.body_rcv if self.chunked else None
        if self.error is None and (
            self.content_length > self.max_body or (chunks is not None and len(chunks) > self.max_body)
        ):
            self.error = RequestEntityTooLarge(f"exceeds max_body of {self.max_body}")
            self.completed = True
        if (
            self.error is None
            and chunks is not None
            and max(len(chunks.control_line), len(chunks.trailer)) > MAX_CHUNK_LINE_BYTES
        ):
            self.error = BadRequest(f"a chunk size line or the trailer is over {MAX_CHUNK_LINE_BYTES} bytes")
            self.completed = True
        if self.error is not None:
            # Else waitress answers "Expect: 100-continue" first, which reopens the refused
            # request and invites its body: no 413 until that body (up to the framing bound) is in.
            self.expect_continue = False
        return consumed


class _JsonErrorTask(ErrorTask):
    """waitress' own refusals (malformed HTTP, body over the limit) as the app's JSON errors."""

    def execute(self) -> None:
        error = self.request.error
        if error.code == 413:
            limit = self.channel.max_body
            body = {
                "error": "payload_too_large",
                "message": f"request body is larger than MAX_REQUEST_BYTES={limit}",
                "fix": "send fewer tasks per request or raise MAX_REQUEST_BYTES",
            }
        else:
            body = {
                "error": _ERROR_CODES.get(error.code, "bad_request"),
                "message": f"{error.reason}: {error.body}",
                "fix": "send a well-formed HTTP/1.1 request",
            }
        data = json.dumps(body).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(data)
        self.write(data)


class _Channel(HTTPChannel):
    """One connection; knows when it opened and whether it was ever answered (for shedding)."""

    error_task_class = _JsonErrorTask
    max_body: int  # MAX_REQUEST_BYTES, set by create_servers

    def __init__(self, server: BaseWSGIServer, sock: socket.socket, addr: Any, adj: Any, map: Any = None):
        super().__init__(server, sock, addr, adj, map=map)
        self.opened = time.monotonic()
        self.answered = False

    def parser_class(self, adj: Any) -> _Parser:
        """waitress calls `self.parser_class(adj)` for each request."""
        return _Parser(adj, self.max_body)

    def service(self) -> None:
        self.answered = True  # a whole request came: a client that talks, not one that only holds a slot
        super().service()

    def handle_close(self) -> None:
        """Also free an unfinished request's body now (past 512 KiB waitress spools it to a temp file)."""
        if self.request is not None:
            self.request.close()
            self.request = None
        super().handle_close()


def create_servers(
    app: Any, sockets: list[socket.socket], *, threads: int, connection_limit: int, max_request_bytes: int
) -> tuple[dict[int, Any], list[BaseWSGIServer]]:
    """waitress servers on already-bound `sockets`: (the I/O loop's socket map, the servers in it)."""
    socket_map: dict[int, Any] = {}
    create_server(
        app,
        map=socket_map,
        sockets=sockets,
        threads=threads,
        connection_limit=connection_limit,
        channel_timeout=IDLE_TIMEOUT_S,
        cleanup_interval=CLEANUP_S,
        # A bound on the bytes read for one body, framing included; _Parser enforces the exact limit.
        max_request_body_size=2 * max_request_bytes + FRAMING_SLACK_BYTES,
        asyncore_use_poll=True,
        ident="sam-backend",
        expose_tracebacks=False,
    )
    channel_class = type("Channel", (_Channel,), {"max_body": max_request_bytes})
    servers = [d for d in socket_map.values() if isinstance(d, BaseWSGIServer)]
    for server in servers:
        server.channel_class = channel_class
    return socket_map, servers


def serve_once(socket_map: dict[int, Any], timeout: float) -> None:
    """One pass of the I/O loop: accept, read, write whatever is ready within `timeout`."""
    wasyncore.loop(timeout=timeout, use_poll=True, map=socket_map, count=1)


class WaitressWorker(Worker):
    """One gunicorn worker process: waitress' I/O loop on gunicorn's sockets, THREADS app threads."""

    def run(self) -> None:
        limit = self.cfg.worker_connections
        socket_map, servers = create_servers(
            self.wsgi,
            [listener.sock for listener in self.sockets],
            threads=self.cfg.threads,
            connection_limit=limit,
            max_request_bytes=Settings.from_env().max_request_bytes,
        )
        shed, next_report = 0, 0.0
        while self.alive and self.ppid == os.getppid():
            self.notify()
            serve_once(socket_map, LOOP_TICK_S)
            now = time.monotonic()
            close_stalled_requests(servers, now)
            shed += shed_connections(servers, limit)
            if shed and now >= next_report:  # at most one line per CLEANUP_S under a flood
                self.log.warning("shed %d unfinished connections near worker_connections=%d", shed, limit)
                shed, next_report = 0, now + CLEANUP_S
        self._drain(servers, socket_map)

    def _drain(self, servers: list[BaseWSGIServer], socket_map: dict[int, Any]) -> None:
        """Graceful stop: accept nothing new, finish the requests in hand (up to graceful_timeout)."""
        for server in servers:
            server.accepting = False
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while time.monotonic() < deadline and any(
            channel.requests or channel.total_outbufs_len
            for server in servers
            for channel in list(server.active_channels.values())
        ):
            self.notify()
            serve_once(socket_map, 0.2)
        if servers:
            servers[0].task_dispatcher.shutdown(timeout=1)  # one dispatcher serves every socket
        wasyncore.close_all(socket_map)


def _channels(servers: list[BaseWSGIServer]) -> list[_Channel]:
    return [channel for server in servers for channel in list(server.active_channels.values())]


def close_stalled_requests(servers: list[BaseWSGIServer], now: float) -> int:
    """Close connections whose request is not all in: headers after HEADER_DEADLINE_S, the rest after REQUEST_DEADLINE_S.

    waitress' own idle timeout only catches silent connections; one byte now and then keeps
    a connection (a file descriptor, a slot under worker_connections, a body buffer of up to
    MAX_REQUEST_BYTES) open indefinitely. A connection whose earlier request is being served
    is not reading, so its next request is not timed against it.
    """
    closed = 0
    for channel in _channels(servers):
        parser = channel.request
        if not isinstance(parser, _Parser) or channel.requests or channel.will_close:
            continue
        age = now - parser.started
        if age > REQUEST_DEADLINE_S or (age > HEADER_DEADLINE_S and not parser.headers_finished):
            channel.handle_close()
            closed += 1
    return closed


def shed_connections(servers: list[BaseWSGIServer], connection_limit: int) -> int:
    """Near `connection_limit`, close the oldest connections that are not being served.

    First those whose request is unfinished or never began, oldest first: a flood of slow or
    silent clients is there, and a real client's request arrives in milliseconds, so it is
    young. Then, only if that was not enough, idle keep-alive connections, longest idle first
    (their clients reconnect, as after any idle timeout). Connections with a request being
    served or an answer being written are never shed. Returns how many were closed.
    """
    channels = _channels(servers)
    if len(channels) < SHED_AT * connection_limit:
        return 0
    candidates = []
    for channel in channels:
        if channel.requests or channel.total_outbufs_len or channel.will_close or channel.close_when_flushed:
            continue
        if channel.request is not None:
            candidates.append((0, channel.request.started, channel))
        elif not channel.answered:
            candidates.append((0, channel.opened, channel))
        else:
            candidates.append((1, channel.last_activity, channel))
    candidates.sort(key=lambda item: item[:2])
    excess = len(channels) - int(SHED_TO * connection_limit)
    for _, _, channel in candidates[:excess]:
        channel.handle_close()
    return min(excess, len(candidates))
