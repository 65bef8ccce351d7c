"""A HeartbeatWorker killed with SIGKILL mid-job: the job is retried soon and completes once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from backend.autoannotate.runs import make_queue
from backend.autoannotate.worker import HEARTBEAT_TTL_S, MAINTENANCE_EVERY_S
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WORKER = (
    "import logging, sys, redis; logging.basicConfig(level=logging.INFO);"
    "from backend.autoannotate.worker import run_worker;"
    "run_worker(redis.Redis.from_url(sys.argv[1]), sys.argv[2])"
)


@pytest.fixture()
def redis_url():
    with RedisServer() as server:
        yield server.url


def start_worker(redis_url: str, queue: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'jobs'}"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, redis_url, queue],
        cwd=ROOT,
        env=env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_job_is_retried_and_finishes_once(redis_url, tmp_path):
    connection = redis.Redis.from_url(redis_url)
    queue = make_queue(connection, "mechanics")
    trace = tmp_path / "trace.txt"
    job = queue.enqueue("job_functions.slow_append", str(trace), 4.0, retry=Retry(max=2), job_timeout=600)
    first = start_worker(redis_url, "mechanics", tmp_path / "w1.log")
    try:
        wait_for(lambda: trace.exists() and "start" in trace.read_text(), 60, "the first attempt to start")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        second = start_worker(redis_url, "mechanics", tmp_path / "w2.log")
        try:
            budget = HEARTBEAT_TTL_S + 3 * MAINTENANCE_EVERY_S + 30
            wait_for(
                lambda: (
                    Job.fetch(job.id, connection=connection, serializer=JSONSerializer).get_status()
                    == JobStatus.FINISHED
                ),
                budget,
                "the retried job to finish",
            )
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    lines = trace.read_text().split()
    assert lines.count("start") == 2, trace.read_text()
    assert lines.count("end") == 1, trace.read_text()
