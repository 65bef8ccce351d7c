"""An RQ worker process: the loop that takes jobs, and what it holds between them.

`Runtime` (settings, the model, caches, the LS client) is built once per process on the
first job, after the worker started, never in a parent that forks: a worker labelling
thousands of tasks loads the weights once. The worker is in-process (rq's SimpleWorker, safe
with CUDA) and keeps its job's lease alive from a thread, so a worker killed mid-task has
its job retried within seconds rather than after the job timeout.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, WorkerStatus

from backend.autoannotate.annotator import AutoAnnotator, RunSpec
from backend.autoannotate.progress import RunProgress
from backend.autoannotate.runs import BATCH_REDIS_TIMEOUT_S, make_queue
from backend.labelstudio.client import LabelStudioClient
from backend.settings import Settings
from backend.wiring import build_backend, label_studio_client

log = logging.getLogger(__name__)
HEARTBEAT_TTL_S = 20  # a dead worker's job is considered abandoned this long after its last beat
HEARTBEAT_EVERY_S = 5
MAINTENANCE_EVERY_S = 10  # how often workers look for abandoned jobs to retry


def replace_prediction(client: LabelStudioClient, task_id: int, prediction: dict) -> dict:
    """Post `prediction`, first deleting the task's predictions of the same model_version.

    A rerun, or a task redone after a worker died, then leaves exactly one prediction.
    """
    for existing in client.list_predictions(task_id):
        if existing.get("model_version") == prediction["model_version"]:
            client.delete_prediction(existing["id"])
    return client.create_prediction(task_id, prediction["result"], prediction["score"], prediction["model_version"])


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def redis(self) -> redis.Redis:
        """The job queue's Redis (runs, progress, planned jobs); the embedding cache has its own."""
        return redis.Redis.from_url(
            self.settings.job_redis_url, socket_timeout=BATCH_REDIS_TIMEOUT_S, health_check_interval=30
        )

    @cached_property
    def progress(self) -> RunProgress:
        return RunProgress(self.redis)

    @cached_property
    def annotator(self) -> AutoAnnotator:
        backend, _ = build_backend(self.settings)
        return AutoAnnotator(backend)

    @cached_property
    def ls(self) -> LabelStudioClient:
        return label_studio_client(self.settings)

    def annotate_task(self, task_id: int, spec: RunSpec) -> dict[str, Any]:
        """Do one task of a run: warm its embedding, or post its AMG prediction to LS (unless it
        holds one of the same model and settings already, and the run does not say `redo`)."""
        task = self.ls.get_task(task_id)
        if spec.options.mode == "embeddings":
            return {"cache": self.annotator.warm(task, spec.value_key)}
        if not spec.options.redo:
            version = self.annotator.model_version(spec.options)
            if any(p.get("model_version") == version for p in self.ls.list_predictions(task_id)):
                return {"skipped": "the task already holds this run's prediction"}  # a resumed run
        prediction = self.annotator.annotate(task, spec.target, spec.value_key, spec.options, spec.labels)
        replace_prediction(self.ls, task_id, prediction)
        return {"regions": len(prediction["result"])}


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def current_runtime() -> Runtime:
    """This process's Runtime, built from the environment on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(Settings.from_env())
        return _runtime


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
        beat = threading.Thread(target=self._beat, args=(job, execution, stop), daemon=True)
        beat.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beat.join()
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Any, execution: Any, stop: threading.Event) -> None:
        """rq's own heartbeat maintenance (what its forking Worker does while the horse runs), from a thread."""
        while not stop.wait(HEARTBEAT_EVERY_S):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as exc:  # Redis blips must not kill the job; the next beat retries
                log.warning("worker heartbeat failed: %s", exc)


def run_worker(connection: redis.Redis, queue_name: str, burst: bool = False) -> None:
    """Process jobs until stopped (or, with burst, until the queue is empty)."""
    worker = HeartbeatWorker([make_queue(connection, queue_name)], connection=connection)
    worker.work(burst=burst, with_scheduler=True, logging_level=logging.getLevelName(log.getEffectiveLevel()))
