"""Auto-annotate as RQ jobs: one RQ job per task, run by `python -m backend worker` processes.

Job arguments and results are JSON (RQ's JSONSerializer), never pickle. Workers load the
model once per process (an in-process SimpleWorker, safe with CUDA) and keep a heartbeat
thread so that a worker killed mid-task has its job retried within seconds rather than
after the job timeout; the task is then redone, and posting replaces the prediction of
the same model_version instead of adding a second one.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from rq import Queue, Retry, get_current_job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, WorkerStatus

from backend.errors import BackendError
from backend.job_progress import JobProgress

log = logging.getLogger(__name__)

RETRY_INTERVALS_S = [2, 10, 30, 60]
HEARTBEAT_TTL_S = 20  # a dead worker's job is considered abandoned this long after its last beat
HEARTBEAT_EVERY_S = 5
MAINTENANCE_EVERY_S = 10  # how often workers look for abandoned jobs to retry
PLAN_PAGE = 100  # task ids enqueued per batch while a project is listed


def make_queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def _retry(retries: int) -> Retry | None:
    return Retry(max=retries, interval=RETRY_INTERVALS_S[:retries]) if retries > 0 else None


def enqueue_run(queue: Queue, progress: JobProgress, spec: dict[str, Any], tasks: list[int] | None,
                retries: int, timeout_s: int) -> str:
    """Start a run over `tasks`, or over every task of spec["project"] when `tasks` is None."""
    run_id = uuid.uuid4().hex
    progress.create(run_id, spec["project"], total=len(tasks or []), planning=tasks is None, spec=spec)
    if tasks is None:
        queue.enqueue("backend.jobs.plan_project", run_id, job_id=f"{run_id}-plan", retry=_retry(retries),
                      job_timeout=timeout_s, result_ttl=progress.ttl_s, failure_ttl=progress.ttl_s)
    else:
        enqueue_tasks(queue, progress, run_id, tasks, retries, timeout_s)
    return run_id


def enqueue_tasks(queue: Queue, progress: JobProgress, run_id: str, tasks: Iterable[int], retries: int,
                  timeout_s: int) -> int:
    jobs = [
        Queue.prepare_data("backend.jobs.run_task", (run_id, int(task_id)), job_id=f"{run_id}-{int(task_id)}",
                           retry=_retry(retries), timeout=timeout_s, result_ttl=progress.ttl_s,
                           failure_ttl=progress.ttl_s)
        for task_id in tasks
    ]
    if jobs:
        queue.enqueue_many(jobs)
    return len(jobs)


def _is_last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def run_task(run_id: str, task_id: int) -> dict[str, Any]:
    """RQ entry point for one task. Errors a retry cannot fix fail the task at once; others are retried."""
    from backend.worker_runtime import current_runtime

    runtime = current_runtime()
    progress = runtime.progress
    spec = progress.spec(run_id)
    if spec is None:
        raise RuntimeError(f"auto-annotate run {run_id} no longer exists (expired?)")
    started = time.perf_counter()
    try:
        outcome = runtime.annotate_task(task_id, spec)
    except BackendError as exc:
        if exc.retryable and not _is_last_attempt():
            raise
        progress.mark_failed(run_id, task_id, f"{exc.message} {exc.fix}".strip())
        return {"task": task_id, "failed": exc.message}
    except Exception as exc:
        if _is_last_attempt():
            progress.mark_failed(run_id, task_id, f"{type(exc).__name__}: {exc} (gave up after retries)")
        raise
    progress.mark_done(run_id, task_id, time.perf_counter() - started)
    return {"task": task_id, **outcome}


def plan_project(run_id: str) -> int:
    """RQ entry point that pages through a project's tasks and enqueues one job per task."""
    from backend.worker_runtime import current_runtime

    runtime = current_runtime()
    spec = runtime.progress.spec(run_id)
    if spec is None:
        raise RuntimeError(f"auto-annotate run {run_id} no longer exists (expired?)")
    queue = get_current_job().origin
    rq_queue = make_queue(runtime.redis, queue)
    count = 0
    try:
        task_ids = (int(task["id"]) for task in runtime.ls.list_tasks(spec["project"]))
        for page in _pages(task_ids, PLAN_PAGE):
            runtime.progress.add_tasks(run_id, len(page))
            count += enqueue_tasks(rq_queue, runtime.progress, run_id, page, runtime.settings.job_retries,
                                   runtime.settings.job_timeout_s)
    except BackendError as exc:
        runtime.progress.planning_done(run_id, error=f"{exc.message} {exc.fix}".strip())
        return count
    runtime.progress.planning_done(run_id)
    return count


def _pages(items: Iterable[int], size: int) -> Iterator[list[int]]:
    """Lists of up to `size` items: a big project's jobs appear as its tasks are listed."""
    page: list[int] = []
    for item in items:
        page.append(item)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


class HeartbeatWorker(SimpleWorker):
    """A SimpleWorker (model stays loaded, no fork after CUDA init) that beats while a job runs.

    SimpleWorker only marks a job's lease at its start, with the job timeout as lease, so a
    worker killed with SIGKILL would leave its task untouched until the timeout passed. Here
    a thread renews a short lease while the job runs; when the process dies the lease lapses
    in HEARTBEAT_TTL_S and any worker's maintenance pass retries the job.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_EVERY_S)
        # RQ runs maintenance only between blocking dequeues of (worker_ttl - 15) s.
        kwargs.setdefault("worker_ttl", MAINTENANCE_EVERY_S + 15)
        super().__init__(*args, **kwargs)

    def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL_S

    def execute_job(self, job: Any, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(execution, queue, stop), daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, execution: Any, queue: Queue, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_EVERY_S):
            try:
                with self.connection.pipeline() as pipe:
                    self.heartbeat(HEARTBEAT_TTL_S, pipeline=pipe)
                    execution.heartbeat(queue.started_job_registry, HEARTBEAT_TTL_S, pipe)
                    pipe.execute()
            except redis.RedisError as exc:  # Redis blips must not kill the job; the next beat retries
                log.warning("worker heartbeat failed: %s", exc)


def run_worker(connection: redis.Redis, queue_name: str, burst: bool = False) -> None:
    """Process jobs until stopped (or, with burst, until the queue is empty)."""
    worker = HeartbeatWorker([make_queue(connection, queue_name)], connection=connection)
    worker.work(burst=burst, with_scheduler=True, logging_level=logging.getLevelName(log.getEffectiveLevel()))
