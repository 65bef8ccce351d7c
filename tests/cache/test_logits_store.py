"""LogitsStore: previous low-res logits by (image, prompt prefix), local + real Redis, short TTL."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from backend.cache.logits import (
    LogitsStore,
    decode_logits,
    encode_logits,
    prompt_signature,
)
from tests.support.redis_server import RedisServer

MB = 1024 * 1024


def logits(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((1, 256, 256)) * 8).astype(np.float32)


def test_codec_round_trips_and_rejects_garbage():
    value = logits()
    np.testing.assert_array_equal(decode_logits(encode_logits(value, np.float32)), value)
    half = decode_logits(encode_logits(value, np.float16))
    assert half.dtype == np.float32 and half.shape == (1, 256, 256)
    np.testing.assert_allclose(half, value, rtol=1e-3, atol=1e-2)
    good = encode_logits(value, np.float16)
    for bad in (b"", b"junk", b"X" + good[1:], good[:-1], good + b"\0"):
        with pytest.raises(ValueError):
            decode_logits(bad)
    with pytest.raises(ValueError):
        encode_logits(value, np.int8)


def test_prompt_signature_is_canonical():
    a = prompt_signature([[10.04, 20.0], [30.0, 40.0]], [1, 0], [1, 2, 3, 4])
    assert a == prompt_signature(np.array([[10.0, 20.01], [30, 40]]), np.array([1, 0]), np.array([1.0, 2, 3, 4]))
    assert a != prompt_signature([[30.0, 40.0], [10.0, 20.0]], [0, 1], [1, 2, 3, 4])  # order matters
    assert a != prompt_signature([[10.0, 20.0], [30.0, 40.0]], [1, 1], [1, 2, 3, 4])  # polarity matters
    assert prompt_signature() != prompt_signature(box=[1, 2, 3, 4])
    with pytest.raises(ValueError):
        prompt_signature([[1, 2]], [1, 0])


def test_local_only_without_redis():
    store = LogitsStore(4 * MB)
    sig = prompt_signature([[1, 2]], [1])
    assert store.get("img", sig) is None
    value = logits()
    store.put("img", sig, value)
    got = store.get("img", sig)
    np.testing.assert_array_equal(got, value)
    got[:] = 0  # callers get their own copy
    np.testing.assert_array_equal(store.get("img", sig), value)
    assert store.get("img", prompt_signature([[1, 3]], [1])) is None
    assert store.get("other-img", sig) is None


def test_local_level_is_bounded_and_expires():
    store = LogitsStore(local_max_bytes=2 * 256 * 256 * 4, ttl_s=1)
    for i in range(3):
        store.put("img", str(i), logits(i))
    assert store.get("img", "0") is None and store.get("img", "2") is not None
    time.sleep(1.05)
    assert store.get("img", "2") is None


def test_shared_through_redis_with_ttl(redis_server: RedisServer):
    a = LogitsStore(4 * MB, redis_server.url, ttl_s=45)
    b = LogitsStore(4 * MB, redis_server.url, ttl_s=45)
    value = logits()
    a.put("img", "p:1", value)
    got = b.get("img", "p:1")
    np.testing.assert_allclose(got, value, rtol=1e-3, atol=1e-2)  # fp16 in Redis
    raw_client = redis_server.client()
    (key,) = raw_client.keys("sam:logits:*")
    assert 40 < raw_client.ttl(key) <= 45
    assert len(raw_client.get(key)) < 256 * 256 * 2 + 64
    a.close()
    b.close()


def test_corrupt_value_is_a_miss(redis_server: RedisServer, caplog):
    a = LogitsStore(4 * MB, redis_server.url)
    a.put("img", "p", logits())
    raw_client = redis_server.client()
    (key,) = raw_client.keys("sam:logits:*")
    raw_client.set(key, b"SAMLGT garbage")
    b = LogitsStore(4 * MB, redis_server.url)
    with caplog.at_level(logging.WARNING):
        assert b.get("img", "p") is None
    assert "corrupt" in caplog.text and raw_client.exists(key) == 0


def test_redis_outage_is_survived_and_logged_once(redis_server: RedisServer, caplog):
    store = LogitsStore(4 * MB, redis_server.url, redis_retry_after_s=0.2)
    redis_server.kill()
    with caplog.at_level(logging.WARNING):
        for i in range(5):
            store.put("img", str(i), logits(i))
            assert store.get("img", str(i)) is not None  # local level still serves
            assert store.get("img", f"missing-{i}") is None
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1
    redis_server.start()
    time.sleep(0.25)
    store.put("img", "after", logits())
    assert redis_server.client().keys("sam:logits:*") != []
    store.close()


@pytest.mark.parametrize(
    "planted",
    [
        np.zeros((1, 64, 64), np.float32),  # another decoder's frame
        np.zeros((256, 256), np.float32),  # right size, wrong rank
        np.full((1, 256, 256), np.nan, np.float32),  # NaN logits would poison the mask
    ],
)
def test_well_formed_value_of_the_wrong_shape_or_not_finite_is_a_counted_miss(redis_server: RedisServer, planted):
    """A value with a valid header but not what the decoder takes is dropped, never kept locally."""
    LogitsStore(0, redis_server.url).put("img", "p", planted)  # a writer that stores anything
    rejected = []
    reader = LogitsStore(4 * MB, redis_server.url, on_reject=lambda: rejected.append(1))
    assert reader.get("img", "p") is None and reader.get("img", "p") is None
    assert rejected == [1]  # the first miss deleted it: the second found nothing to reject
    assert redis_server.client().keys("sam:logits:*") == []
    reader.put("img", "p", logits())
    assert reader.get("img", "p").shape == (1, 256, 256)
