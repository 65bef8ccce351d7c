"""ByteLRU: the in-process level's bound is in bytes, eviction is least-recently-used."""

from __future__ import annotations

import threading

from backend.cache.lru import ByteLRU


def test_total_bytes_never_exceed_the_bound_and_oldest_goes_first():
    lru: ByteLRU[str] = ByteLRU(max_bytes=100)
    lru.put("a", "A", 40)
    lru.put("b", "B", 40)
    assert lru.get("a") == "A"  # a is now the most recent
    lru.put("c", "C", 40)  # 120 > 100: b (least recent) goes
    assert lru.get("b") is None
    assert lru.get("a") == "A" and lru.get("c") == "C"
    assert lru.nbytes == 80 and len(lru) == 2


def test_entry_larger_than_the_bound_is_not_stored_and_evicts_nothing():
    lru: ByteLRU[str] = ByteLRU(max_bytes=100)
    lru.put("a", "A", 60)
    lru.put("big", "X", 101)
    assert "big" not in lru and lru.get("a") == "A"


def test_replacing_a_key_recounts_its_bytes():
    lru: ByteLRU[str] = ByteLRU(max_bytes=100)
    lru.put("a", "A1", 90)
    lru.put("a", "A2", 10)
    assert lru.nbytes == 10 and lru.get("a") == "A2"


def test_zero_bytes_disables_it():
    lru: ByteLRU[str] = ByteLRU(max_bytes=0)
    lru.put("a", "A", 1)
    assert lru.get("a") is None


def test_entries_expire_after_ttl():
    now = [0.0]
    lru: ByteLRU[str] = ByteLRU(max_bytes=100, ttl_s=10, clock=lambda: now[0])
    lru.put("a", "A", 10)
    now[0] = 9.9
    assert lru.get("a") == "A"
    now[0] = 10.0
    assert "a" not in lru and lru.get("a") is None and lru.nbytes == 0


def test_concurrent_puts_keep_the_accounting_exact():
    lru: ByteLRU[int] = ByteLRU(max_bytes=1000)

    def writer(offset: int) -> None:
        for i in range(2000):
            lru.put((offset, i % 50), i, 7)
            lru.get((offset, (i * 7) % 50))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lru.nbytes == 7 * len(lru) <= 1000
