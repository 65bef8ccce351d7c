"""Encode several annotators' new images in one encoder call (a GPU shared by a team).

On a GPU the encoder is the shared resource, and a batch of 8 images costs far less than 8
single encodes. Requests that miss the embedding cache at about the same time are collected
for up to `window_s` (or until `max_batch` are waiting) and encoded together by one thread;
each caller gets its own image's embedding, or its own error. On a CPU a batch costs what
its images cost one by one, so the wiring leaves the batcher off there (ENCODE_BATCH_SIZE).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from sam_model import ImageEmbedding

log = logging.getLogger(__name__)
EncodeBatch = Callable[[Sequence[np.ndarray]], list[ImageEmbedding]]


@dataclass
class _Request:
    image: np.ndarray
    result: Future[ImageEmbedding] = field(default_factory=Future)


class EncodeBatcher:
    """`encode(image)` blocks until its embedding is ready; one daemon thread runs the batches.

    A batch that fails is retried one image at a time, so a bad image fails alone and its
    batch-mates still get their embeddings.
    """

    def __init__(self, encode_batch: EncodeBatch, max_batch: int, window_s: float) -> None:
        if max_batch < 2:
            raise ValueError("a batcher needs max_batch >= 2 (1 means: encode directly)")
        self._encode_batch = encode_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self._queue: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="encode-batcher", daemon=True)
        self._thread.start()

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        request = _Request(image)
        self._queue.put(request)
        return request.result.result()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.window_s))
            except queue.Empty:
                pass
            self._serve(batch)

    def _serve(self, batch: list[_Request]) -> None:
        try:
            embeddings = self._encode_batch([r.image for r in batch])
        except Exception as exc:  # every caller must hear back, whatever happened
            if len(batch) == 1:
                batch[0].result.set_exception(exc)
                return
            log.warning("a batch of %d encodes failed (%s); encoding them one by one", len(batch), exc)
            for request in batch:
                self._serve([request])
            return
        for request, embedding in zip(batch, embeddings, strict=True):
            request.result.set_result(embedding)
