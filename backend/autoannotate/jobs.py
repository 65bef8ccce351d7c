"""The RQ job functions: one job per task of a run (`run_task`), and one that lists a project (`plan_project`).

They run in `python -m backend worker` processes (backend.autoannotate.worker), which load
the model once. A task whose attempt fails for a reason a retry can fix is retried by RQ; a
task redone after a worker died replaces the prediction of the same model_version instead
of adding a second one. Job arguments and results are JSON, never pickle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from rq import get_current_job

from backend.autoannotate.annotator import RunSpec, RunSpecInvalid
from backend.autoannotate.progress import RunProgress
from backend.autoannotate.runs import enqueue_tasks, make_queue
from backend.autoannotate.worker import Runtime, current_runtime
from backend.errors import BackendError

PLAN_PAGE = 100  # task ids enqueued per batch while a project is listed


def _is_last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def run_task(run_id: str, task_id: int) -> dict[str, Any]:
    """RQ entry point for one task. Errors a retry cannot fix (a bad stored spec too) fail the task at once;
    others are retried; a run that expired fails the job, not the run."""
    runtime = current_runtime()
    progress = runtime.progress
    try:
        spec = _spec(runtime, run_id)
    except RunSpecInvalid as exc:
        return _failed(progress, run_id, task_id, exc)
    started = time.perf_counter()
    try:
        outcome = runtime.annotate_task(task_id, spec)
    except BackendError as exc:
        if exc.retryable and not _is_last_attempt():
            raise
        return _failed(progress, run_id, task_id, exc)
    except Exception as exc:
        if _is_last_attempt():
            progress.mark_failed(run_id, task_id, f"{type(exc).__name__}: {exc} (gave up after retries)")
        raise
    progress.mark_done(run_id, task_id, time.perf_counter() - started)
    return {"task": task_id, **outcome}


def plan_project(run_id: str) -> int:
    """RQ entry point that pages through a project's tasks and enqueues one job per task."""
    runtime = current_runtime()
    queue = get_current_job().origin
    rq_queue = make_queue(runtime.redis, queue)
    count = 0
    try:
        task_ids = (int(task["id"]) for task in runtime.ls.list_tasks(_spec(runtime, run_id).project))
        for page in _pages(task_ids, PLAN_PAGE):
            runtime.progress.add_tasks(run_id, len(page))
            count += enqueue_tasks(
                rq_queue, runtime.progress, run_id, page, runtime.settings.job_retries, runtime.settings.job_timeout_s
            )
    except BackendError as exc:
        runtime.progress.planning_done(run_id, error=f"{exc.message} {exc.fix}".strip())
        return count
    runtime.progress.planning_done(run_id)
    return count


def _failed(progress: RunProgress, run_id: str, task_id: int, exc: BackendError) -> dict[str, Any]:
    """Record the task as failed with the error's reason and fix: a retry could not help."""
    progress.mark_failed(run_id, task_id, f"{exc.message} {exc.fix}".strip())
    return {"task": task_id, "failed": exc.message}


def _spec(runtime: Runtime, run_id: str) -> RunSpec:
    """The run's spec from Redis (RunSpecInvalid, a BackendError, when what is stored is not one)."""
    spec = runtime.progress.spec(run_id)
    if spec is None:
        raise RuntimeError(f"auto-annotate run {run_id} no longer exists (expired?)")
    return spec


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
