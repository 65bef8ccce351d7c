"""Raw TCP servers on 127.0.0.1 for answers no HTTP library would send: one that records the
bytes of every request whatever their shape, one that trickles its answer a byte at a time."""

from __future__ import annotations

import socket
import threading


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
