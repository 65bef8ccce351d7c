"""Starting and reading auto-annotate runs: shared by POST /auto-annotate and the CLI.

A run is one POST /auto-annotate (or CLI call): many tasks, one run id, one progress record.
Each task of a run is one RQ job. Jobs and run records live in the job queue's Redis
(settings.job_redis_url: QUEUE_REDIS_URL, else REDIS_URL), which must never evict: an LRU
Redis filled by embeddings would drop queued jobs and runs without a trace. It is checked on
first use, and its failures become 503s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from backend.autoannotate.annotator import ModelIds, RunSpec, is_ls_id, output_for, parse_options
from backend.autoannotate.progress import RunProgress, new_run_id
from backend.bulkhead import Bulkhead
from backend.errors import BackendError, BadRequest, Overloaded
from backend.labelstudio.client import LabelStudioClient
from backend.labelstudio.label_config import parse_label_config
from backend.settings import Settings
from backend.wiring import label_studio_client

RETRY_INTERVALS_S = [2, 10, 30, 60]
# A request thread waits this long for the queue Redis: a hung Redis (SIGSTOPped, a stalled
# network) must turn into a quick 503, not hold THREADS request threads and starve /health.
REQUEST_REDIS_TIMEOUT_S = 2.0
# Workers and the CLI hold no request thread: they wait longer rather than fail a task.
BATCH_REDIS_TIMEOUT_S = 10.0


def make_queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def _retry(retries: int) -> Retry | None:
    return Retry(max=retries, interval=RETRY_INTERVALS_S[:retries]) if retries > 0 else None


def enqueue_run(
    queue: Queue, progress: RunProgress, spec: RunSpec, tasks: list[int] | None, retries: int, timeout_s: int
) -> str:
    """Start a run over `tasks`, or over every task of spec.project when `tasks` is None; returns the run id."""
    run_id = new_run_id()
    progress.create(run_id, total=len(tasks or []), planning=tasks is None, spec=spec)
    if tasks is None:
        queue.enqueue(
            "backend.autoannotate.jobs.plan_project",
            run_id,
            job_id=f"{run_id}-plan",
            retry=_retry(retries),
            job_timeout=timeout_s,
            result_ttl=progress.ttl_s,
            failure_ttl=progress.ttl_s,
        )
    else:
        enqueue_tasks(queue, progress, run_id, tasks, retries, timeout_s)
    return run_id


def enqueue_tasks(
    queue: Queue, progress: RunProgress, run_id: str, tasks: Iterable[int], retries: int, timeout_s: int
) -> int:
    """One RQ job per task of the run (job id `<run id>-<task id>`); returns how many."""
    jobs = [
        Queue.prepare_data(
            "backend.autoannotate.jobs.run_task",
            (run_id, int(task_id)),
            job_id=f"{run_id}-{int(task_id)}",
            retry=_retry(retries),
            timeout=timeout_s,
            result_ttl=progress.ttl_s,
            failure_ttl=progress.ttl_s,
        )
        for task_id in tasks
    ]
    if jobs:
        queue.enqueue_many(jobs)
    return len(jobs)


class QueueRedisEvicts(BackendError):
    """The job queue's Redis may evict keys: queued jobs and run records would vanish silently."""

    status, code = 503, "queue_redis_evicts"


class QueueRedisUnavailable(Overloaded):
    """The job queue's Redis is down or full: temporary, so 503 with Retry-After."""

    code = "queue_unavailable"


def queue_redis_name(settings: Settings) -> str:
    """The variable that names the job queue's Redis (QUEUE_REDIS_URL, else the cache's REDIS_URL)."""
    return "QUEUE_REDIS_URL" if settings.queue_redis_url else "REDIS_URL"


@contextmanager
def queue_redis_errors(settings: Settings) -> Iterator[None]:
    """Redis failures on the job queue as 503s that say what happened, instead of 500s."""
    name = queue_redis_name(settings)
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise QueueRedisUnavailable(
            f"the job queue's Redis ({name}) is unreachable: {exc}",
            f"start that Redis or fix {name}; runs already queued there resume with it",
        ) from exc
    except redis.exceptions.OutOfMemoryError as exc:
        raise QueueRedisUnavailable(
            f"the job queue's Redis ({name}) is full: {exc}",
            "raise its maxmemory, or let its finished runs expire; nothing queued was lost",
        ) from exc
    except redis.exceptions.ReadOnlyError as exc:
        raise QueueRedisUnavailable(
            f"the job queue's Redis ({name}) is a read-only replica", f"point {name} at the primary"
        ) from exc


def check_never_evicts(connection: redis.Redis, settings: Settings) -> None:
    """Refuse a queue Redis whose maxmemory-policy may evict jobs and run records (INFO, as CONFIG may be disabled)."""
    with queue_redis_errors(settings):
        policy = connection.info("memory").get("maxmemory_policy", "unknown")
    if policy == "noeviction":
        return
    name = queue_redis_name(settings)
    message = (
        f"{name} points at a Redis with maxmemory-policy {policy}: it would evict queued auto-annotate jobs "
        "and run records when it fills up, and runs would vanish silently"
    )
    if settings.queue_redis_url:
        fix = (
            "run that Redis with --maxmemory-policy noeviction --appendonly yes, "
            "or point QUEUE_REDIS_URL at one that is"
        )
    else:
        fix = (
            "set QUEUE_REDIS_URL to a second Redis run with --maxmemory-policy noeviction --appendonly yes "
            "(REDIS_URL stays the LRU embedding cache), or run the one Redis with noeviction"
        )
    raise QueueRedisEvicts(message, fix)


class QueueRedis:
    """The job queue's Redis client, made on first use and checked then to never evict.

    Not checked at import or start, so a backend without Redis, or whose Redis starts later,
    still serves clicks; a failed check is repeated on the next use, so fixing the Redis
    needs no restart. Request threads go through `connection()`, which lets at most
    `waiters` of them wait on this Redis at once: with it hung, the others get a 503 at
    once instead of queueing in front of /health.
    """

    def __init__(self, settings: Settings, timeout_s: float = REQUEST_REDIS_TIMEOUT_S):
        self.settings = settings
        self.timeout_s = timeout_s
        self.waiters = max(1, settings.threads // 2)
        self._waiting = Bulkhead(self.waiters, self._too_many_waiting)
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        """The checked client (no lock: two first uses at once merely both check, and one client is kept)."""
        if self._client is None:
            if not self.settings.job_redis_url:
                raise Overloaded(
                    "auto-annotate runs need Redis and RQ workers, and REDIS_URL is not set",
                    "set QUEUE_REDIS_URL (a noeviction Redis) for the backend and its workers, "
                    "and start workers: python -m backend worker",
                )
            client = redis.Redis.from_url(
                self.settings.job_redis_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
            check_never_evicts(client, self.settings)
            self._client = client
        return self._client

    @contextmanager
    def connection(self) -> Iterator[redis.Redis]:
        """The client for one request's Redis calls, its failures as 503s; refused at once when `waiters` wait."""
        with self._waiting.enter(), queue_redis_errors(self.settings):
            yield self.get()

    def _too_many_waiting(self) -> QueueRedisUnavailable:
        name = queue_redis_name(self.settings)
        return QueueRedisUnavailable(
            f"{self.waiters} requests of this process are already waiting on the job "
            f"queue's Redis ({name}): it is slow or hung",
            f"retry in a few seconds; if this persists, check the Redis at {name}",
        )


def parse_task_selection(raw: Any) -> list[int] | None:
    """`[ids]` -> those tasks; `"all"` -> None (every task of the project)."""
    if raw == "all":
        return None
    if not isinstance(raw, list) or not raw or not all(is_ls_id(t) for t in raw):
        raise BadRequest("'tasks' must be \"all\" or a non-empty list of task ids", 'send e.g. "tasks": [1, 2, 3]')
    return sorted(set(raw))


def make_spec(client: LabelStudioClient, models: ModelIds, project: Any, options: Any) -> RunSpec:
    """What every task of a run needs, checked once against the project's label config."""
    if not is_ls_id(project):
        raise BadRequest("'project' must be a Label Studio project id (a positive integer)")
    parsed = parse_options(options)
    label_config = client.get(f"/api/projects/{project}/").json().get("label_config", "")
    config = parse_label_config(label_config)
    target, value_key = output_for(config, parsed)
    return RunSpec.create(project, parsed, target, value_key, models, config.controls[target.from_name].labels)


def start_run(
    settings: Settings, queue_redis: QueueRedis, models: ModelIds, project: Any, tasks: Any, options: Any
) -> str:
    """Validate the request, then start a run: one job per task (or a planner job for "all"); returns the run id."""
    selection = parse_task_selection(tasks)
    spec = make_spec(label_studio_client(settings), models, project, options)
    with queue_redis.connection() as connection:
        return enqueue_run(
            make_queue(connection, settings.rq_queue),
            RunProgress(connection),
            spec,
            selection,
            settings.job_retries,
            settings.job_timeout_s,
        )


def run_starter(settings: Settings) -> Callable[[RunSpec, list[int]], str] | None:
    """spec, task ids -> run id on the job queue; None without a queue Redis."""
    if not settings.job_redis_url:
        return None
    queue_redis = QueueRedis(settings)

    def start(spec: RunSpec, tasks: list[int]) -> str:
        with queue_redis.connection() as connection:
            return enqueue_run(
                make_queue(connection, settings.rq_queue),
                RunProgress(connection),
                spec,
                tasks,
                settings.job_retries,
                settings.job_timeout_s,
            )

    return start
