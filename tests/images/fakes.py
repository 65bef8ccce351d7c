"""Test doubles: a real HTTP(S) server on 127.0.0.1 that plays Label Studio or an image host; JWT and image makers."""

from __future__ import annotations

import base64
import io
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


Reply = tuple[int, dict, bytes]


class FakeServer:
    """Routes `path -> fn(Seen) -> (status, headers, body)`; records every request it gets."""

    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        self.routes: dict[str, Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                req = Seen(self.command, parts.path, parse_qs(parts.query), dict(self.headers), self.rfile.read(length))
                server.seen.append(req)
                route = server.routes.get(parts.path)
                status, headers, body = route(req) if route else (404, {}, b"not found")
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if headers.get("Transfer-Encoding") == "chunked":
                    for i in range(0, len(body), 4096):
                        piece = body[i : i + 4096]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve(self, path: str, body: bytes = b"", status: int = 200, headers: dict | None = None) -> None:
        self.routes[path] = lambda req: (status, dict(headers or {}), body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def requires_token(expected: str, reply: Callable[[Seen], Reply]) -> Callable[[Seen], Reply]:
    """Wrap a route so that it answers 401 (like DRF) unless `Authorization: <expected>` is sent."""

    def route(req: Seen) -> Reply:
        if req.headers.get("Authorization") != expected:
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Invalid token."}'
        return reply(req)

    return route


def jwt(claims: dict) -> str:
    """A JWT-shaped string (header.payload.signature, base64url JSON); nobody checks the signature."""

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pat(exp_in: float = 3600, jti: str = "pat1") -> str:
    return jwt({"token_type": "refresh", "exp": int(time.time() + exp_in), "jti": jti, "user_id": 1})


def image_bytes(img: Image.Image, fmt: str = "PNG", **save_kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kw)
    return buf.getvalue()


class _RawServer:
    """A TCP server on 127.0.0.1 that hands each connection, after reading its request head, to `answer`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(2)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    head += piece
            except OSError:
                pass
            self.received(head)
            try:
                self.answer(conn, head)
            except OSError:  # the client gave up: stop sending
                pass

    def received(self, head: bytes) -> None:
        pass

    def answer(self, conn: socket.socket, head: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)
        self.sock.close()


class CaptureServer(_RawServer):
    """Records the raw bytes of every request it gets (whatever their shape) and answers 404."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        super().__init__()

    def received(self, head: bytes) -> None:
        self.raw.append(head)

    def answer(self, conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class TrickleServer(_RawServer):
    """Answers slowly, one byte every `interval` seconds (at most `limit` bytes, then it stops):
    mode "headers" trickles the header block, "body" a Content-Length body, "chunked" a chunked body."""

    def __init__(self, mode: str, interval: float = 0.2, limit: int = 100) -> None:
        self.mode, self.interval, self.limit = mode, interval, limit
        super().__init__()

    def answer(self, conn: socket.socket, head: bytes) -> None:
        if self.mode == "headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            pieces = [b"a"] * self.limit + [b"\r\nContent-Length: 0\r\n\r\n"]
        elif self.mode == "body":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % self.limit)
            pieces = [b"x"] * self.limit
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n")
            pieces = [b"1\r\nx\r\n"] * self.limit + [b"0\r\n\r\n"]
        for piece in pieces:
            if self.stopped.wait(self.interval):
                return
            conn.sendall(piece)
