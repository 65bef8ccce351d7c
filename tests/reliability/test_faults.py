"""Faults a deployment meets: Redis restarts, a killed gunicorn process, Label Studio going down.

Everything is real: redis-server (killed with SIGKILL), gunicorn (its worker or the whole
server killed with SIGKILL), an RQ worker (`python -m backend worker`), and a fake LS on
127.0.0.1 whose prediction API can be switched to 503. Waits are bounded loops on state
(never timing assertions): a fault test fails on a wrong answer or a lost request, not on
a slow machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.fake_ls import FakeLabelStudioAPI
from tests.support.images import png, scene
from tests.support.samples import LS_TOKEN, sample
from tests.support.servers import REPO, Backend

CONFIG = sample("predict_interactive_request.json")["label_config"]
W, H = 160, 120
IMAGES = {
    f"/data/upload/1/fault{i}.png": scene(W, H, [(30 + 5 * i, 40, 18), (70, 65, 16)], seed=100 + i) for i in range(12)
}
CLICKS = [(30.0, 40.0), (70.0, 65.0), (32.0, 42.0)]


def click_body(path: str, x: float, y: float) -> dict:
    region = {
        "original_width": W,
        "original_height": H,
        "image_rotation": 0,
        "is_positive": True,
        "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["Banana"]},
        "id": "kp",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
    }
    return {
        "tasks": [{"id": 1, "data": {"image": path}}],
        "label_config": CONFIG,
        "params": {"context": {"result": [region]}},
    }


def rle_of(response: requests.Response) -> tuple[int, ...]:
    """The brush RLE of a one-region answer: the exact bytes LS would draw."""
    assert response.status_code == 200, response.text
    (region,) = response.json()["results"][0]["result"]
    return tuple(region["value"]["rle"])


def until(condition: Callable[[], Any], attempts: int = 200, pause_s: float = 0.1) -> Any:
    """Poll `condition` at most `attempts` times; returns its first truthy value or fails."""
    for _ in range(attempts):
        value = condition()
        if value:
            return value
        time.sleep(pause_s)
    raise AssertionError(f"condition not met after {attempts} polls: {condition}")


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def post_retrying(url: str, body: dict, attempts: int = 100) -> requests.Response:
    """What a client does while a backend restarts: retry refused/reset connections, bounded."""
    for _ in range(attempts):
        try:
            return requests.post(url + "/predict", json=body, timeout=60)
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"backend at {url} did not come back after {attempts} attempts")


@pytest.fixture(scope="module")
def fake_ls():
    ls = FakeLabelStudioAPI(CONFIG)
    for path, image in IMAGES.items():
        ls.add_file(path, png(image))
    yield ls
    ls.close()


def backend_env(fake_ls: FakeLabelStudioAPI, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "SAM_ENGINE": "grabcut",
        "LABEL_STUDIO_URL": fake_ls.url,
        "LABEL_STUDIO_API_KEY": LS_TOKEN,
        "REDIS_URL": redis_url,
        "WARM_ON_PREDICT": "false",
        **extra,
    }


# ---- Redis restarted while annotators click ------------------------------------------------------


def test_redis_restart_during_a_stream_of_clicks_fails_no_request(start_backend, fake_ls, redis_server):
    server = start_backend(backend_env(fake_ls, redis_server.url))
    paths = list(IMAGES)[:8]
    # Half the images are known before the outage; the other half are first seen during or after it.
    reference = {(p, c): rle_of(server.post("/predict", click_body(p, *c))) for p in paths[:4] for c in CLICKS}
    stream = [(p, c) for round_ in range(2) for p in paths for c in CLICKS]  # 48 clicks
    answered: list[tuple[str, tuple, requests.Response]] = []
    half = threading.Event()
    lock = threading.Lock()

    def one(item: tuple[str, tuple]) -> None:
        response = requests.post(server.url + "/predict", json=click_body(item[0], *item[1]), timeout=60)
        with lock:
            answered.append((*item, response))
            if len(answered) >= 8:
                half.set()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, item) for item in stream]
        assert half.wait(120), "the click stream did not start"
        redis_server.kill()
        until(lambda: len(answered) >= 24, attempts=1200)  # clicks keep landing while Redis is gone
        redis_server.start()
        for future in futures:
            future.result()

    failed = [(p, c, r.status_code, r.text[:200]) for p, c, r in answered if r.status_code != 200]
    assert not failed, failed
    for p in paths[4:]:
        for c in CLICKS:
            reference[(p, c)] = rle_of(server.post("/predict", click_body(p, *c)))
    for p, c, response in answered:
        assert rle_of(response) == reference[(p, c)], f"{p} {c}: mask differs from the same click alone"
    # Redis came back empty: once the backend reconnects (it retries a down link after a few
    # seconds), a newly seen image is stored there again. Each poll clicks a never-seen image.
    store = redis_server.client()
    fresh = iter(range(40))

    def new_image_reaches_redis() -> bool:
        i = next(fresh)
        path = f"/data/upload/1/after-restart-{i}.png"
        fake_ls.add_file(path, png(scene(W, H, [(30, 40, 18)], seed=500 + i)))
        assert server.post("/predict", click_body(path, *CLICKS[0])).status_code == 200
        return bool(store.keys("sam:emb:*"))

    until(new_image_reaches_redis, attempts=40, pause_s=0.5)


# ---- a gunicorn process killed with SIGKILL ----------------------------------------------------


def test_killed_gunicorn_recovers_and_reuses_redis_embeddings(
    start_backend, fake_ls, redis_server, tmp_path, monkeypatch
):
    env = backend_env(fake_ls, redis_server.url)
    server = start_backend(env)
    paths = list(IMAGES)[:6]
    before = {(p, c): rle_of(server.post("/predict", click_body(p, *c))) for p in paths for c in CLICKS[:2]}
    fetched = {p: fake_ls.count("GET", p) for p in paths}

    # 1. The worker dies (the kernel's OOM killer does this); the gunicorn master starts another.
    (worker,) = children(server.proc.pid)
    os.kill(worker, signal.SIGKILL)
    for (p, c), rle in before.items():
        assert rle_of(post_retrying(server.url, click_body(p, *c))) == rle
    (new_worker,) = children(server.proc.pid)
    assert new_worker != worker
    assert server.metric("sam_embedding_cache_total", level="redis", source="click") == len(paths)
    assert server.metric("sam_encoder_seconds_count") == 0  # nothing re-encoded in the new worker
    assert {p: fake_ls.count("GET", p) for p in paths} == fetched  # nor downloaded again

    # 2. The whole server dies (container killed) and a new one starts on the same port.
    os.kill(server.proc.pid, signal.SIGKILL)
    os.kill(new_worker, signal.SIGKILL)
    server.proc.wait(10)
    monkeypatch.setitem(Backend.__init__.__globals__, "free_port", lambda: server.port)  # same address as before
    restarted = Backend(env, tmp_path / "restarted.log")
    try:
        for (p, c), rle in before.items():
            assert rle_of(post_retrying(restarted.url, click_body(p, *c))) == rle
        assert restarted.metric("sam_embedding_cache_total", level="redis", source="click") == len(paths)
        assert restarted.metric("sam_encoder_seconds_count") == 0
        assert {p: fake_ls.count("GET", p) for p in paths} == fetched
    finally:
        restarted.stop()


# ---- Label Studio down while an auto-annotate run posts predictions ------------------------------


class RQWorker:
    """`python -m backend worker` as deployed: its own process, the model loaded there."""

    def __init__(self, env: dict[str, str], log_path: Path):
        full = {
            k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO", "BASIC_AUTH"))
        }
        full.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}, **env)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend", "worker"], cwd=REPO, env=full, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def sam_deployment(start_backend, fake_ls, redis_server, tiny_checkpoint, tmp_path_factory):
    """A tiny-SAM backend and one RQ worker sharing Redis and the fake LS (tasks 1 and 2)."""
    for task_id, path in ((1, list(IMAGES)[0]), (2, list(IMAGES)[1])):
        fake_ls.add_task(task_id, {"image": path})
    env = backend_env(
        fake_ls,
        redis_server.url,
        SAM_ENGINE="sam",
        SAM_MODEL="tiny",
        SAM_CHECKPOINT=str(tiny_checkpoint),
        JOB_RETRIES="1",
    )
    server = start_backend(env)
    worker = RQWorker(env, tmp_path_factory.mktemp("rq") / "worker.log")
    yield server, worker
    worker.stop()


def run_to_end(server: Backend, worker: RQWorker, tasks: list[int]) -> dict:
    started = server.post(
        "/auto-annotate",
        {
            "project": 1,
            "tasks": tasks,
            "options": {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0},
        },
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]

    def finished() -> dict | None:
        assert worker.proc.poll() is None, worker.log()[-3000:]
        status = server.get(f"/auto-annotate/{run_id}").json()
        return status if status["state"] not in ("queued", "running") and not status["planning"] else None

    return until(finished, attempts=600, pause_s=0.25)


def test_ls_down_while_posting_predictions_is_retried_then_reported(sam_deployment, fake_ls):
    server, worker = sam_deployment
    fake_ls.predictions_down = True
    try:
        before = fake_ls.count("GET", "/api/predictions/")
        status = run_to_end(server, worker, [1, 2])
    finally:
        fake_ls.predictions_down = False
    assert status["state"] == "finished_with_errors", status
    assert (status["total"], status["done"], status["failed"]) == (2, 0, 2), status
    assert sorted(e["task"] for e in status["errors"]) == [1, 2]
    assert all("503" in e["error"] for e in status["errors"]), status["errors"]
    assert fake_ls.count("GET", "/api/predictions/") - before >= 4  # each task tried twice (JOB_RETRIES=1)
    assert not fake_ls.predictions  # nothing half-posted


def test_ls_back_before_the_retry_gets_every_prediction_posted_once(sam_deployment, fake_ls):
    server, worker = sam_deployment
    fake_ls.predictions_down = True
    before = fake_ls.count("GET", "/api/predictions/")
    recovered = threading.Event()

    def recover() -> None:  # LS comes back after each task's first attempt failed
        for _ in range(1200):
            if fake_ls.count("GET", "/api/predictions/") - before >= 2:
                break
            time.sleep(0.05)
        fake_ls.predictions_down = False
        recovered.set()

    threading.Thread(target=recover, daemon=True).start()
    status = run_to_end(server, worker, [1, 2])
    assert recovered.is_set()
    assert status["state"] == "finished" and (status["done"], status["failed"]) == (2, 0), status
    posted = sorted(p["task"] for p in fake_ls.predictions.values())
    assert posted == [1, 2], fake_ls.predictions


# ---- the job queue's Redis hung (SIGSTOP) while clients poll and start runs -------------------------

HUNG_POLLS = 24


def timed(call: Callable[..., requests.Response], *args: Any, **kwargs: Any) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = call(*args, **kwargs)
    return time.monotonic() - started, response


def assert_quick_503(seconds: float, response: requests.Response) -> None:
    assert response.status_code == 503 and response.headers.get("Retry-After"), response.text
    assert response.json()["error"] == "queue_unavailable" and response.json()["fix"], response.text
    assert seconds < 6.0, f"{seconds:.1f} s: the request thread waited on the hung Redis too long"


def test_a_hung_queue_redis_gives_quick_503s_and_never_starves_health(start_backend, fake_ls, redis_server):
    """A stopped Redis accepts connections and never answers: each request waiting on it held a thread for
    the socket timeout (10 s), and 24 run polls held all THREADS=8, so /health timed out. Now a request
    waits at most ~2 s, at most THREADS/2 wait at once (the others get their 503 at once), and /health
    answers meanwhile."""
    server = start_backend(backend_env(fake_ls, redis_server.url))
    run_id = uuid.uuid4().hex
    assert server.get(f"/auto-annotate/{run_id}").status_code == 404  # the queue Redis is connected and checked
    pid = int(redis_server.client().info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(HUNG_POLLS) as pool:
            polls = [pool.submit(timed, server.get, f"/auto-annotate/{run_id}") for _ in range(HUNG_POLLS)]
            time.sleep(0.5)  # the polls are in, holding every request thread they can
            health_s, health = timed(requests.get, server.url + "/health", timeout=15)
            answers = [poll.result() for poll in polls]
        # A start after the polls: its run record write is what waits on the hung Redis now.
        answers.append(timed(server.post, "/auto-annotate", {"project": 1, "tasks": [1]}))
    finally:
        os.kill(pid, signal.SIGCONT)
    assert health.status_code == 200 and health_s < 2.0, f"/health took {health_s:.1f} s"
    for seconds, response in answers:
        assert_quick_503(seconds, response)
    assert any("unreachable" in r.json()["message"] for _, r in answers), "some request did wait for Redis"
    assert server.get(f"/auto-annotate/{run_id}").status_code == 404, "Redis back: answered again"
