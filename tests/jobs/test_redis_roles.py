"""The two Redis roles: an LRU embedding cache (REDIS_URL) and a job queue that never evicts (QUEUE_REDIS_URL).

Real redis-server processes. A run must survive the cache Redis filling past its maxmemory;
an evicting queue Redis is refused with the fix; a queue Redis that is down or full gives
503 + Retry-After with a JSON reason, never a 500.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from backend.settings import Settings
from backend.web.app import create_app
from tests.support.fake_ls import FakeLabelStudioAPI
from tests.support.images import png, scene
from tests.support.label_configs import BRUSH_WITH_SMART_KEYPOINTS
from tests.support.redis_server import RedisServer
from tests.support.samples import LS_TOKEN
from tests.support.servers import REPO
from tests.support.worker_pool import Workers

RUN_TASKS = list(range(1, 26))
NEVER_EVICTS = ("--maxmemory-policy", "noeviction", "--appendonly", "yes")
EMBEDDINGS_ONLY = {"mode": "embeddings"}  # each task writes a 2 MiB embedding into the cache Redis


@pytest.fixture()
def ls():
    api = FakeLabelStudioAPI(BRUSH_WITH_SMART_KEYPOINTS, token=LS_TOKEN)
    for task_id in RUN_TASKS:
        api.add_file(f"/data/upload/1/t{task_id}.png", png(scene(96, 64, [(50, 50, 20)], seed=task_id)))
        api.add_task(task_id, {"image": f"/data/upload/1/t{task_id}.png"})
    yield api
    api.close()


@pytest.fixture()
def cache_redis():
    with RedisServer("--maxmemory", "8mb", "--maxmemory-policy", "allkeys-lru") as server:
        yield server


@pytest.fixture()
def queue_redis():
    with RedisServer(*NEVER_EVICTS) as server:
        yield server


def base_env(ls: FakeLabelStudioAPI, tiny_checkpoint, tmp_path) -> dict[str, str]:
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": LS_TOKEN,
        "SAM_ENGINE": "sam",
        "SAM_MODEL": "tiny",
        "SAM_CHECKPOINT": str(tiny_checkpoint),
        "RQ_QUEUE": f"roles-{tmp_path.name}",
        "JOB_RETRIES": "2",
        "ALLOW_PRIVATE_IMAGE_URLS": "true",
    }


def client_for(env: dict[str, str]):
    return create_app(Settings.from_env(env)).test_client()


def start(client, tasks=RUN_TASKS, options=EMBEDDINGS_ONLY):
    return client.post("/auto-annotate", json={"project": 1, "tasks": tasks, "options": options})


def evicted(server: RedisServer) -> int:
    return int(server.client().info("stats")["evicted_keys"])


def make_full(server: RedisServer) -> None:
    """Hold 2 MiB of data in a noeviction Redis, then cap it below that: every write is refused.

    (Filling up to maxmemory by writing alone is flaky: used memory hovers around the cap as
    client and AOF buffers come and go, and a small write slips in now and then.)
    """
    connection = server.client()
    for index in range(32):
        connection.set(f"filler:{index}", b"x" * 65536)
    connection.config_set("maxmemory", "1mb")
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        connection.set("probe", b"x")


def assert_503_json(response, code: str, *words: str, retry_after: bool = True) -> dict:
    assert response.status_code == 503, response.get_json()
    body = response.get_json()
    assert body["error"] == code and body["message"] and body["fix"], body
    text = f"{body['message']} {body['fix']}"
    assert all(word in text for word in words), (words, body)
    assert ("Retry-After" in response.headers) is retry_after
    return body


def test_a_run_completes_while_embeddings_overflow_the_cache_redis(
    ls, cache_redis, queue_redis, tiny_checkpoint, tmp_path
):
    env = {**base_env(ls, tiny_checkpoint, tmp_path), "REDIS_URL": cache_redis.url, "QUEUE_REDIS_URL": queue_redis.url}
    client = client_for(env)
    workers = Workers(env, tmp_path)
    stop = threading.Event()

    def overflow_cache() -> None:  # more pressure on the LRU than the embeddings alone put there
        connection = cache_redis.client()
        for index in range(300):
            if stop.wait(0.05):
                return
            connection.set(f"junk:{index}", b"j" * 262144)

    filler = threading.Thread(target=overflow_cache, daemon=True)
    try:
        response = start(client)
        assert response.status_code == 202, response.get_json()
        run_id = response.get_json()["run_id"]
        filler.start()
        workers.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            reply = client.get(f"/auto-annotate/{run_id}")
            assert reply.status_code == 200, (reply.get_json(), workers.logs())
            status = reply.get_json()
            if status["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        filler.join(30)
        workers.stop_all()
    assert status["state"] == "finished", (status, workers.logs())
    assert (status["total"], status["done"], status["failed"]) == (len(RUN_TASKS), len(RUN_TASKS), 0)
    assert evicted(cache_redis) > 0, "the cache Redis was meant to overflow and evict"
    assert evicted(queue_redis) == 0
    assert cache_redis.client().info("memory")["used_memory"] <= 8 * 2**20 * 1.1
    # The jobs and the run record live in the queue Redis only.
    assert any(key.startswith(b"rq:") for key in queue_redis.client().scan_iter(count=1000))
    assert not any(key.startswith((b"rq:", b"sam:aa:")) for key in cache_redis.client().scan_iter(count=1000))


@pytest.mark.parametrize("queue_var", ["REDIS_URL", "QUEUE_REDIS_URL"])
def test_an_evicting_queue_redis_is_refused_with_the_fix(ls, cache_redis, tiny_checkpoint, tmp_path, queue_var):
    env = {**base_env(ls, tiny_checkpoint, tmp_path), queue_var: cache_redis.url}
    client = client_for(env)
    body = assert_503_json(
        start(client), "queue_redis_evicts", queue_var, "allkeys-lru", "noeviction", retry_after=False
    )
    if queue_var == "REDIS_URL":  # one LRU Redis for everything: the message says to add the second one
        assert "set QUEUE_REDIS_URL" in body["fix"]
    assert not list(cache_redis.client().scan_iter("rq:*")), "nothing may be queued there"

    worker = subprocess.run(
        [sys.executable, "-m", "backend", "worker", "--burst"],
        cwd=REPO,
        timeout=120,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert worker.returncode == 2, worker.stderr
    assert "maxmemory-policy allkeys-lru" in worker.stderr and "fix:" in worker.stderr

    # Fixed at runtime: the next request checks again, no restart needed.
    cache_redis.client().config_set("maxmemory-policy", "noeviction")
    assert start(client).status_code == 202


def test_a_full_or_stopped_queue_redis_answers_503_with_retry_after(ls, queue_redis, tiny_checkpoint, tmp_path):
    small = RedisServer(*NEVER_EVICTS).start()
    try:
        env = {**base_env(ls, tiny_checkpoint, tmp_path), "QUEUE_REDIS_URL": small.url}
        client = client_for(env)
        first = start(client, tasks=[1, 2])
        assert first.status_code == 202, first.get_json()
        run_id = first.get_json()["run_id"]

        make_full(small)
        assert_503_json(start(client), "queue_unavailable", "QUEUE_REDIS_URL", "full", "maxmemory")
        assert client.get(f"/auto-annotate/{run_id}").get_json()["total"] == 2, "a full Redis still answers reads"

        small.stop()
        assert_503_json(start(client), "queue_unavailable", "unreachable")
        assert_503_json(client.get(f"/auto-annotate/{run_id}"), "queue_unavailable", "unreachable")
        # A process whose first use of the queue finds it down (the eviction check cannot run) says the same.
        assert_503_json(client_for(env).get(f"/auto-annotate/{run_id}"), "queue_unavailable", "unreachable")
    finally:
        small.close()
