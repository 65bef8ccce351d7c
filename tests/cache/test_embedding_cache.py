"""EmbeddingCache against a real redis-server: levels, sharing, single flight, outages, corruption."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
import torch

from backend.cache import EmbeddingCache
from sam_model.common.embedding import ImageEmbedding
from tests.support.cached import cached
from tests.support.redis_server import RedisServer

MB = 1024 * 1024


def make_embedding(seed: int = 0, shape: tuple[int, ...] = (1, 8, 16, 16)) -> ImageEmbedding:
    gen = torch.Generator().manual_seed(seed)
    return ImageEmbedding(torch.randn(shape, generator=gen), (30, 40), (24, 32), "test-model")


class Counter:
    """A compute() that counts its calls and can be slow."""

    def __init__(self, seed: int = 0, delay_s: float = 0.0):
        self.calls = 0
        self._lock = threading.Lock()
        self._seed = seed
        self._delay_s = delay_s

    def __call__(self) -> ImageEmbedding:
        with self._lock:
            self.calls += 1
        time.sleep(self._delay_s)
        return make_embedding(self._seed)


def value_key(key: str) -> str:
    return "sam:emb:" + hashlib.sha256(key.encode()).hexdigest()


def assert_close_fp16(a: ImageEmbedding, b: ImageEmbedding) -> None:
    assert a.original_size == b.original_size and a.input_size == b.input_size and a.model_id == b.model_id
    assert a.features.shape == b.features.shape
    assert torch.allclose(a.features.float(), b.features.float(), atol=2e-3, rtol=2e-3)


def test_levels_local_then_redis_then_computed(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url, ttl_s=60)
    compute = Counter()
    first, source = cache.get_or_compute("img-1", compute)
    assert source == "computed" and compute.calls == 1
    same, source = cache.get_or_compute("img-1", compute)
    assert source == "local" and same is first

    cache._local.clear()  # as after a restart of this process
    from_redis, source = cache.get_or_compute("img-1", compute)
    assert source == "redis" and compute.calls == 1
    assert_close_fp16(from_redis, first)
    assert cache.get_or_compute("img-1", compute)[1] == "local"

    redis_server.client().flushall()
    cache._local.clear()
    assert cache.get_or_compute("img-1", compute)[1] == "computed" and compute.calls == 2
    cache.close()


def test_redis_value_is_fp16_bytes_with_ttl_under_a_hashed_key(redis_server: RedisServer):
    long_key = "vit_b|https://bucket.example/" + "x" * 3000 + "?X-Amz-Signature=abc"
    cache = EmbeddingCache(16 * MB, redis_server.url, ttl_s=321)
    embedding, _ = cache.get_or_compute(long_key, Counter())
    raw_client = redis_server.client()
    keys = raw_client.keys("*")
    assert keys == [value_key(long_key).encode()]
    assert 300 < raw_client.ttl(keys[0]) <= 321
    raw = raw_client.get(keys[0])
    assert raw.startswith(b"SAMEMB")
    assert embedding.features.numel() * 2 <= len(raw) < embedding.features.numel() * 2 + 512  # fp16, not fp32
    assert ImageEmbedding.from_bytes(raw).features.dtype == torch.float16
    cache.close()


def test_integer_features_keep_their_dtype_in_redis(redis_server: RedisServer):
    image = torch.randint(0, 256, (12, 10, 3), dtype=torch.uint8)  # grabcut stores the image itself
    a = EmbeddingCache(16 * MB, redis_server.url)
    a.get_or_compute("img", lambda: ImageEmbedding(image, (12, 10), (12, 10), "grabcut"))
    got, source = EmbeddingCache(16 * MB, redis_server.url).get_or_compute("img", Counter())
    assert source == "redis" and got.features.dtype == torch.uint8 and torch.equal(got.features, image)


def test_two_instances_share_redis(redis_server: RedisServer):
    a = EmbeddingCache(16 * MB, redis_server.url)
    b = EmbeddingCache(16 * MB, redis_server.url)
    compute = Counter()
    assert a.get_or_compute("img", compute)[1] == "computed"
    got, source = b.get_or_compute("img", compute)
    assert source == "redis" and compute.calls == 1
    assert b.get_or_compute("img", compute)[1] == "local"
    a.close()
    b.close()


def test_without_redis_url_it_is_a_local_cache():
    cache = EmbeddingCache(16 * MB)
    compute = Counter()
    assert cache.get_or_compute("img", compute)[1] == "computed"
    assert cache.get_or_compute("img", compute)[1] == "local"
    assert cache.contains("img") and not cache.contains("other")
    assert cached(cache, "other") is None and compute.calls == 1


def test_local_level_is_bounded_by_bytes():
    one = make_embedding().features.nbytes  # 8 KiB
    cache = EmbeddingCache(local_max_bytes=int(3.5 * (one + 1024)))
    for i in range(10):
        cache.get_or_compute(f"img-{i}", Counter(i))
    assert len(cache._local) == 3 and cache._local.nbytes <= cache._local.max_bytes
    assert [cache.contains(f"img-{i}") for i in range(10)] == [False] * 7 + [True] * 3


def test_reading_and_contains_never_compute(redis_server: RedisServer):
    writer = EmbeddingCache(16 * MB, redis_server.url)
    reader = EmbeddingCache(16 * MB, redis_server.url)
    assert cached(reader, "img") is None and not reader.contains("img")
    original, _ = writer.get_or_compute("img", Counter())
    assert reader.contains("img")  # in Redis only
    peeked = cached(reader, "img")
    assert peeked is not None
    assert_close_fp16(peeked, original)
    assert reader.get_or_compute("img", Counter())[1] == "local"  # reading it kept it locally
    writer.close()
    reader.close()


def test_twenty_threads_one_compute(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url)
    compute = Counter(delay_s=0.3)
    barrier = threading.Barrier(20)
    results: list[tuple[ImageEmbedding, str]] = []

    def ask() -> None:
        barrier.wait()
        results.append(cache.get_or_compute("img", compute))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compute.calls == 1 and len(results) == 20
    assert all(embedding is results[0][0] for embedding, _ in results)
    assert {source for _, source in results} <= {"computed", "local"}
    cache.close()


def test_compute_error_reaches_every_waiter_and_releases_the_lock(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url)

    def broken() -> ImageEmbedding:
        time.sleep(0.2)
        raise RuntimeError("encoder exploded")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            cache.get_or_compute("img", broken)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 3
    assert redis_server.client().keys("*") == []  # no value, no lock left behind
    assert cache.get_or_compute("img", Counter())[1] == "computed"
    cache.close()


def test_waits_for_another_process_holding_the_lock(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url, lock_timeout_s=10)
    raw_client = redis_server.client()
    raw_client.set(value_key("img") + ":lock", "peer-token", px=10_000)  # a peer is computing
    peer_value = make_embedding(7)

    def peer_finishes() -> None:
        time.sleep(0.4)
        raw_client.set(value_key("img"), peer_value.to_bytes())
        raw_client.delete(value_key("img") + ":lock")

    threading.Thread(target=peer_finishes).start()
    compute = Counter()
    got, source = cache.get_or_compute("img", compute)
    assert source == "redis" and compute.calls == 0
    assert_close_fp16(got, peer_value)
    cache.close()


def test_lock_timeout_bounds_the_wait_for_a_dead_peer(redis_server: RedisServer, caplog):
    cache = EmbeddingCache(16 * MB, redis_server.url, lock_timeout_s=0.5)
    redis_server.client().set(value_key("img") + ":lock", "dead-peer", px=60_000)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_compute("img", Counter())[1] == "computed"
    assert 0.5 <= time.monotonic() - start < 5
    assert "computing here" in caplog.text
    assert redis_server.client().get(value_key("img") + ":lock") == b"dead-peer"  # not ours: untouched
    cache.close()


def test_peer_lock_vanishing_without_a_value_hands_over_the_computation(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url, lock_timeout_s=10)
    raw_client = redis_server.client()
    raw_client.set(value_key("img") + ":lock", "peer", px=300)  # peer crashed; its lock expires
    compute = Counter()
    start = time.monotonic()
    assert cache.get_or_compute("img", compute)[1] == "computed" and compute.calls == 1
    assert time.monotonic() - start < 3
    assert raw_client.get(value_key("img") + ":lock") is None  # we took it and released it
    cache.close()


def test_corrupt_value_is_a_miss_and_gets_overwritten(redis_server: RedisServer, caplog):
    raw_client = redis_server.client()
    raw_client.set(value_key("img"), b"SAMEMB\x01garbage")
    cache = EmbeddingCache(16 * MB, redis_server.url)
    compute = Counter()
    with caplog.at_level(logging.WARNING):
        embedding, source = cache.get_or_compute("img", compute)
    assert source == "computed" and compute.calls == 1
    assert "corrupt" in caplog.text
    assert_close_fp16(ImageEmbedding.from_bytes(raw_client.get(value_key("img"))), embedding)
    cache.close()


def _refuse_other_models(embedding: ImageEmbedding) -> None:
    if embedding.model_id != "test-model":
        raise ValueError(f"embedding is from model {embedding.model_id!r}")


@pytest.mark.parametrize(
    "planted",
    [
        ImageEmbedding(torch.zeros(1, 8, 16, 16), (30, 40), (24, 32), "another-model"),  # check() refuses it
        ImageEmbedding(torch.zeros(1, 8, 16, 16), (100_000, 100_000), (24, 32), "test-model"),  # over max_pixels
    ],
)
def test_well_formed_but_unusable_value_is_a_counted_miss_and_gets_overwritten(
    redis_server: RedisServer, planted: ImageEmbedding
):
    """A value with a valid checksum that the engine could not have made is never served or kept."""
    EmbeddingCache(0, redis_server.url).get_or_compute("img", lambda: planted)  # a writer that stores anything
    rejected = []
    cache = EmbeddingCache(
        16 * MB, redis_server.url, check=_refuse_other_models, max_pixels=10**8, on_reject=lambda: rejected.append(1)
    )
    compute = Counter()
    assert cached(cache, "img") is None and rejected == [1]
    embedding, source = cache.get_or_compute("img", compute)
    assert source == "computed" and compute.calls == 1 and embedding.model_id == "test-model"
    again, source = cache.get_or_compute("img", compute)
    assert again is embedding and source == "local"
    assert_close_fp16(ImageEmbedding.from_bytes(redis_server.client().get(value_key("img"))), embedding)
    assert rejected == [1]
    cache.close()


def test_corrupt_value_is_reported_once_while_waiting_for_a_peer(redis_server: RedisServer, caplog):
    raw_client = redis_server.client()
    raw_client.set(value_key("img"), b"not an embedding")
    raw_client.set(value_key("img") + ":lock", "peer", px=10_000)
    peer_value = make_embedding(3)

    def peer_finishes() -> None:
        time.sleep(0.5)
        raw_client.set(value_key("img"), peer_value.to_bytes())

    threading.Thread(target=peer_finishes).start()
    cache = EmbeddingCache(16 * MB, redis_server.url, lock_timeout_s=10, poll_interval_s=0.02)
    with caplog.at_level(logging.WARNING):
        got, source = cache.get_or_compute("img", Counter())
    assert source == "redis"
    assert_close_fp16(got, peer_value)
    assert len([r for r in caplog.records if "corrupt" in r.getMessage()]) == 1
    cache.close()


def test_no_redis_traffic_during_the_backoff(redis_server: RedisServer):
    cache = EmbeddingCache(16 * MB, redis_server.url, redis_retry_after_s=60)
    redis_server.kill()
    assert cache.get_or_compute("a", Counter())[1] == "computed"
    redis_server.start()
    assert cache.get_or_compute("b", Counter())[1] == "computed"
    assert redis_server.client().keys("*") == []  # still backing off: Redis not touched
    cache.close()


def test_redis_dies_and_comes_back(redis_server: RedisServer, caplog):
    logger = logging.getLogger("test.cache.outage")
    cache = EmbeddingCache(16 * MB, redis_server.url, logger=logger, redis_retry_after_s=0.3)
    assert cache.get_or_compute("before", Counter())[1] == "computed"
    redis_server.kill()

    with caplog.at_level(logging.INFO, logger="test.cache.outage"):
        for i in range(5):
            start = time.monotonic()
            assert cache.get_or_compute(f"down-{i}", Counter())[1] == "computed"
            assert time.monotonic() - start < 1.0
        time.sleep(0.4)  # past the backoff: the next request probes, fails, stays quiet
        assert cache.get_or_compute("down-probe", Counter())[1] == "computed"
        assert cache.get_or_compute("before", Counter())[1] == "local"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
        assert "down-" not in warnings[0].getMessage()

        redis_server.start()
        time.sleep(0.4)
        assert cache.get_or_compute("after", Counter())[1] == "computed"
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert redis_server.client().exists(value_key("after")) == 1  # Redis is used again
    cache._local.clear()
    assert cache.get_or_compute("after", Counter())[1] == "redis"
    cache.close()


def test_unreachable_redis_from_the_start(caplog):
    with RedisServer() as server:
        url = server.url
    cache = EmbeddingCache(16 * MB, url, redis_retry_after_s=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert cache.get_or_compute("img", Counter())[1] in ("computed", "local")
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    cache.close()


def _slow_compute(work: Path, name: str) -> ImageEmbedding:
    with open(work / "computed.log", "a") as log:
        log.write(name + "\n")
    time.sleep(1.0)
    return ImageEmbedding(torch.full((1, 4, 8, 8), 3.0), (10, 10), (8, 8), "m")


def _flight(name: str, work: Path, url: str, go: Event, results: Queue) -> None:
    """One process (as one gunicorn worker would be): its own cache, its own Redis connections."""
    cache = EmbeddingCache(16 * MB, url, lock_timeout_s=30, poll_interval_s=0.02)
    go.wait(30)
    embedding, source = cache.get_or_compute("shared-image", lambda: _slow_compute(work, name))
    results.put((name, source, float(embedding.features.float().mean())))
    cache.close()


def test_cross_process_single_flight(redis_server: RedisServer, tmp_path: Path):
    """Three processes ask for the same key at once: one compute among them, the others read Redis."""
    # fork, as gunicorn makes its workers; it also spares each child a multi-second torch import.
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_flight, args=(f"p{i}", tmp_path, redis_server.url, go, results)) for i in range(3)]
    for proc in procs:
        proc.start()
    try:
        go.set()
        outcomes = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(10)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    assert all(proc.exitcode == 0 for proc in procs)
    assert sorted(source for _, source, _ in outcomes) == ["computed", "redis", "redis"], outcomes
    assert all(mean == 3.0 for _, _, mean in outcomes)
    assert len((tmp_path / "computed.log").read_text().splitlines()) == 1
