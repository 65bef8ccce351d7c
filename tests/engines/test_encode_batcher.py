"""The encoder batcher: batched equals one by one, each caller gets its own image's embedding,
a failing image fails alone; and every family's `encode_batch` equals its `encode`.

Runs on CPU (the batcher's correctness does not depend on the device; its speed-up is a GPU
figure, bench/bench_gpu.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from backend.engines.batcher import EncodeBatcher
from backend.engines.engine import Batching, ServingEngine, spec_for
from sam_model import ImageEmbedding, family_of
from tests.support.images import scene
from tests.support.torch_threads import torch_threads


class RecordingEncoder:
    """Embeds an image as its own pixels' mean per channel, recording each batch it was given.

    Its first batch waits for `gate`: the test queues every request meanwhile, so the
    batches that follow are real batches whatever the machine's scheduling.
    """

    model_id = "recording"

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on
        self.gate = threading.Event()

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        self.batches.append(len(images))
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        if self.fail_on is not None and any(int(i[0, 0, 0]) == self.fail_on for i in images):
            raise ValueError(f"image {self.fail_on} is bad")
        return [self.embed(i) for i in images]

    @staticmethod
    def embed(image: np.ndarray) -> ImageEmbedding:
        features = torch.from_numpy(image.reshape(-1, 3).mean(0, dtype=np.float64)).float()[None]
        return ImageEmbedding(features, image.shape[:2], image.shape[:2], "recording")


def image_of(i: int) -> np.ndarray:
    return np.full((8 + i, 10 + i, 3), i, dtype=np.uint8)


def all_at_once(encoder: RecordingEncoder, encode: Callable[[int], object], n: int) -> list[object]:
    """Call `encode(i)` for i < n from n threads; the encoder's gate opens once all are waiting."""
    waiting = threading.Semaphore(0)

    def call(i: int) -> object:
        waiting.release()
        return encode(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(call, i) for i in range(n)]
        for _ in range(n):
            waiting.acquire(timeout=30)
        time.sleep(0.2)  # each thread has passed the semaphore; let it reach the queue
        encoder.gate.set()
        return [f.result() for f in futures]


def test_concurrent_misses_share_batches_and_each_gets_its_own() -> None:
    encoder = RecordingEncoder()
    batcher = EncodeBatcher(encoder.encode_batch, max_batch=4, window_s=0.05)
    results = all_at_once(encoder, lambda i: (i, batcher.encode(image_of(i))), 8)
    for i, embedding in results:
        assert embedding.original_size == (8 + i, 10 + i)
        assert torch.equal(embedding.features, RecordingEncoder.embed(image_of(i)).features)
    assert sum(encoder.batches) == 8 and max(encoder.batches) == 4


def test_a_failing_image_fails_alone() -> None:
    encoder = RecordingEncoder(fail_on=3)
    batcher = EncodeBatcher(encoder.encode_batch, max_batch=8, window_s=0.05)

    def encode(i: int) -> object:
        try:
            return batcher.encode(image_of(i)).original_size
        except ValueError as exc:
            return str(exc)

    outcomes = all_at_once(encoder, encode, 6)
    assert outcomes == [(8 + i, 10 + i) if i != 3 else "image 3 is bad" for i in range(6)]
    assert max(encoder.batches) > 1  # the failure happened inside a real batch, then was isolated


def test_a_batch_of_one_is_not_a_batcher() -> None:
    with pytest.raises(ValueError):
        EncodeBatcher(RecordingEncoder().encode_batch, max_batch=1, window_s=0.01)


def test_auto_batches_only_on_a_gpu() -> None:
    class OnDevice(RecordingEncoder):
        def __init__(self, device: str) -> None:
            super().__init__()
            self.device = torch.device(device)

    assert Batching().batcher_for(OnDevice("cpu")) is None
    assert Batching().batcher_for(OnDevice("cuda")).max_batch == 8  # built without touching CUDA
    assert Batching(size=3).batcher_for(OnDevice("cpu")).max_batch == 3
    assert Batching(size=1).batcher_for(OnDevice("cuda")) is None


def test_the_serving_engine_routes_encodes_through_the_batcher() -> None:
    encoder = RecordingEncoder()
    encoder.encode = lambda image: pytest.fail("a batched engine must not encode one by one")  # type: ignore[attr-defined]
    encoder.decode = encoder.check_embedding = None  # type: ignore[attr-defined]
    serving = ServingEngine(spec_for(encoder), batching=Batching(size=4, window_s=0.05))
    serving.load()  # the batcher starts with the engine
    sizes = all_at_once(encoder, lambda i: serving.encode(image_of(i)).original_size, 4)
    assert sizes == [(8 + i, 10 + i) for i in range(4)] and max(encoder.batches) > 1


@pytest.mark.parametrize("model_type", ["tiny", "sam_hq_tiny", "mobile_sam", "sam2.1_hiera_tiny"])
def test_every_familys_encode_batch_equals_encode(model_type: str) -> None:
    torch.manual_seed(0)
    family = family_of(model_type)
    with torch_threads(1):
        predictor = family.predictor(family.build(model_type).eval(), model_type, "fp32", False)
        images = [scene(120, 90, [(40, 50, 20)], seed=1), scene(64, 160, [(20, 30, 15)], seed=2)]
        batched = predictor.encode_batch(images)
        for image, embedding in zip(images, batched, strict=True):
            alone = predictor.encode(image)
            assert embedding.original_size == alone.original_size and embedding.input_size == alone.input_size
            torch.testing.assert_close(embedding.features, alone.features, atol=1e-4, rtol=1e-4)
            assert embedding.features.untyped_storage().nbytes() == embedding.features.nbytes  # owns its memory


def test_the_gpu_benchmark_runs_end_to_end_on_cpu() -> None:
    """bench/bench_gpu.py is the one command for a lent GPU: it must not first fail there."""
    import subprocess
    import sys

    from tests.support.servers import REPO

    args = ["--device", "cpu", "--models", "tiny", "--precisions", "fp32", "--annotators", "3", "--clicks", "2"]
    out = subprocess.run(
        [sys.executable, "bench/bench_gpu.py", *args, "--rounds", "1", "--batch", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (row,) = [line for line in out.stdout.splitlines() if line.startswith("| tiny |")]
    assert row.count("|") == 9 and " ms " in row
