"""A real HTTP(S) server on 127.0.0.1 whose routes tests script: it plays Label Studio or an image host.

Each route is `path -> fn(Seen) -> (status, headers, body)`, so a test decides per request what
"the server" answers (redirects, chunked bodies, 401s), and every request is kept in `seen` so
the test can check what the client sent (its token, its headers) and where.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    """One request as the server got it."""

    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


Reply = tuple[int, dict, bytes]  # status, headers, body


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
