"""Starting and reading auto-annotate runs: shared by POST /auto-annotate and the CLI."""
from __future__ import annotations

from typing import Any, Callable

import redis

from backend.auto_annotate import output_for, parse_options, run_spec
from backend.errors import BadRequest, Overloaded
from backend.job_progress import JobProgress
from backend.jobs import enqueue_run, make_queue
from backend.label_config import parse_label_config
from backend.settings import Settings
from backend.ls_client import LabelStudioClient


def label_studio_client(settings: Settings) -> LabelStudioClient:
    """The client jobs use to read tasks and post predictions (needs LABEL_STUDIO_URL and a key)."""
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise BadRequest("auto-annotate needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY",
                         "set both for the backend and its workers (Account & Settings -> Access Token in LS)")
    return LabelStudioClient(settings.label_studio_url, api_key=settings.label_studio_api_key,
                             timeout=settings.fetch_timeout_s)


def redis_for_runs(settings: Settings) -> redis.Redis:
    if not settings.redis_url:
        raise Overloaded("auto-annotate runs need Redis and RQ workers, and REDIS_URL is not set",
                         "set REDIS_URL for the backend and start workers: python -m backend worker")
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10)


def parse_task_selection(raw: Any) -> list[int] | None:
    """`[ids]` -> those tasks; `"all"` -> None (every task of the project)."""
    if raw == "all":
        return None
    if (not isinstance(raw, list) or not raw
            or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in raw)):
        raise BadRequest("'tasks' must be \"all\" or a non-empty list of task ids", 'send e.g. "tasks": [1, 2, 3]')
    return sorted(set(raw))


def make_spec(client: LabelStudioClient, model_id: str, project: Any, options: Any) -> dict[str, Any]:
    """What every task of a run needs, checked once against the project's label config."""
    if not isinstance(project, int) or isinstance(project, bool) or project <= 0:
        raise BadRequest("'project' must be a Label Studio project id (a positive integer)")
    parsed = parse_options(options)
    label_config = client.get(f"/api/projects/{project}/").json().get("label_config", "")
    target, value_key = output_for(parse_label_config(label_config), parsed)
    return run_spec(project, parsed, target, value_key, model_id)


def start_run(settings: Settings, connection: redis.Redis, model_id: str, project: Any, tasks: Any,
              options: Any) -> str:
    """Validate the request, then enqueue one job per task (or a planner job for "all")."""
    selection = parse_task_selection(tasks)
    spec = make_spec(label_studio_client(settings), model_id, project, options)
    return enqueue_run(make_queue(connection, settings.rq_queue), JobProgress(connection), spec, selection,
                       settings.job_retries, settings.job_timeout_s)


def run_starter(settings: Settings) -> Callable[[dict[str, Any], list[int]], str] | None:
    """spec, task ids -> run id on the configured queue; None without REDIS_URL."""
    if not settings.redis_url:
        return None
    connection = redis_for_runs(settings)
    queue, progress = make_queue(connection, settings.rq_queue), JobProgress(connection)
    return lambda spec, tasks: enqueue_run(queue, progress, spec, tasks, settings.job_retries, settings.job_timeout_s)
