"""A real, throwaway `redis-server` for tests: loopback only, free port, temp dir, no persistence.

Tests that exercise Redis behaviour (outages, restarts, eviction) need the real server, not a
mock. One instance keeps its port across stop()/kill()/start(), so clients built from `.url`
see the same address come back, as they would after a real Redis restart.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        server.kill()      # SIGKILL: an abrupt outage
        server.start()     # same port, empty data
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.net import free_port

REDIS_SERVER_BIN = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One `redis-server` process on 127.0.0.1; `extra_args` are passed through (e.g. maxmemory)."""

    def __init__(self, *extra_args: str, port: int | None = None, start_timeout_s: float = 10.0):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._extra_args = list(extra_args)
        self._start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self._proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis:
        """A plain client for assertions (TTL, raw values); the caller closes it or lets it go."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def start(self) -> RedisServer:
        """Start (or restart) on the same port and wait until it answers PING."""
        if self.running:
            return self
        args = [
            REDIS_SERVER_BIN,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self._dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--loglevel",
            "warning",
            *self._extra_args,
        ]
        log = open(self._dir / "redis.log", "ab")
        self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited early: {self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not answer PING on port {self.port}: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), waiting for the process to exit."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """Abrupt outage (SIGKILL), as when the container dies."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def log_tail(self, chars: int = 2000) -> str:
        path = self._dir / "redis.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
