"""Bounded background warm-up: compute embeddings for tasks LS is about to show.

When LS asks for predictions without a prompt (a task was opened, or "Retrieve
predictions" on a batch), encoding those images now turns the annotator's first click into
a cache hit. The work is bounded: one daemon thread per process and a capped queue; when the
queue is full new items are dropped and counted, never piled up as threads or memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class WarmupQueue(Generic[T]):
    """`submit(key, item)` queues `work(item)` unless the same key is already pending."""

    def __init__(
        self,
        work: Callable[[T], None],
        maxsize: int,
        on_drop: Callable[[], None] = lambda: None,
        on_done: Callable[[bool], None] = lambda ok: None,
    ):
        self._work = work
        self._on_drop = on_drop
        self._on_done = on_done
        self._queue: queue.Queue[tuple[Hashable, T]] = queue.Queue(maxsize=max(0, maxsize) or 1)
        self._enabled = maxsize > 0
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, item: T) -> bool:
        """Queue the item; False when it was dropped (queue full or disabled) or already queued."""
        with self._lock:
            if key in self._pending:
                return False
            if not self._enabled:
                self._on_drop()
                return False
            try:
                self._queue.put_nowait((key, item))
            except queue.Full:
                self._on_drop()
                return False
            self._pending.add(key)
            self._start_worker()
        return True

    def depth(self) -> int:
        return self._queue.qsize()

    def join(self) -> None:
        """Block until everything queued so far has been worked (tests, shutdown)."""
        self._queue.join()

    def _start_worker(self) -> None:
        # Started on first use, so it lives in the process that serves requests (post-fork).
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="warmup", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            key, item = self._queue.get()
            ok = False
            try:
                self._work(item)
                ok = True
            except Exception as exc:  # noqa: BLE001 - one bad task must not kill the worker
                log.warning("warm-up failed: %s", exc)
            finally:
                with self._lock:
                    self._pending.discard(key)
                self._on_done(ok)
                self._queue.task_done()
