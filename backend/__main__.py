"""Command line: `python -m backend auto-annotate ...` and `python -m backend worker`.

auto-annotate starts a run (one RQ job per task) and follows it with a progress bar when a job
queue Redis is set (QUEUE_REDIS_URL, else REDIS_URL; workers do the work), or labels the tasks
in this process with --local or without Redis. Both refuse a queue Redis that may evict (see
backend/autoannotate/runs.py).
It exits 1 when any task failed, after listing them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from backend.autoannotate.annotator import ModelIds
from backend.concepts.service import concept_spec
from backend.engines.engine import engine_spec
from backend.errors import BackendError
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.autoannotate.progress import RunProgress

POLL_S = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run an RQ worker for auto-annotate runs' jobs (model loaded once)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    run = commands.add_parser(
        "auto-annotate", help="pre-label tasks of a project: automatic masks, or each label's instances (concepts)"
    )
    run.add_argument("--project", type=int, required=True)
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--tasks", help="comma-separated task ids, e.g. 1,2,3")
    which.add_argument("--all", action="store_true", help="every task of the project")
    run.add_argument(
        "--mode",
        choices=("masks", "embeddings", "concepts"),
        default="masks",
        help="embeddings: only warm the cache so the first clicks are instant; "
        "concepts: each label as a text prompt (needs CONCEPT_ENGINE)",
    )
    run.add_argument("--output", choices=("brush", "polygon", "rectangle"))
    run.add_argument("--label")
    run.add_argument("--max-masks", type=int)
    run.add_argument(
        "--options",
        default="{}",
        help='more options as JSON, e.g. \'{"points_per_side": 16}\' or \'{"prompts": {"Car": "car . truck"}}\'',
    )
    run.add_argument("--local", action="store_true", help="label in this process instead of RQ workers")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    try:
        options = json.loads(args.options)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--options is not valid JSON: {exc}") from None
    options["mode"] = args.mode
    for name in ("output", "label", "max_masks"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _follow(progress: RunProgress, run_id: str) -> dict[str, Any]:
    """Poll the run, drawing tasks/s and ETA, until every task is done or failed."""
    with tqdm(desc=f"run {run_id[:8]}", unit="task") as bar:
        while True:
            status = progress.status(run_id)
            bar.total = status["total"]
            bar.n = status["done"] + status["failed"]
            bar.set_postfix(failed=status["failed"], refresh=False)
            bar.refresh()
            if status["state"] not in ("queued", "running") and not status["planning"]:
                return status
            time.sleep(POLL_S)


def _run_local(settings: Settings, args: argparse.Namespace, models: ModelIds) -> dict[str, Any]:
    from backend.autoannotate.runs import make_spec, parse_task_selection
    from backend.autoannotate.worker import Runtime

    runtime = Runtime(settings)
    spec = make_spec(runtime.ls, models, args.project, _options(args))
    selection = parse_task_selection([int(t) for t in args.tasks.split(",")] if args.tasks else "all")
    task_ids = selection if selection is not None else [int(t["id"]) for t in runtime.ls.list_tasks(args.project)]
    errors = []
    for task_id in tqdm(task_ids, desc=f"project {args.project}", unit="task"):
        try:
            runtime.annotate_task(task_id, spec)
        except BackendError as exc:
            errors.append({"task": task_id, "error": f"{exc.message} {exc.fix}".strip()})
    return {"total": len(task_ids), "done": len(task_ids) - len(errors), "failed": len(errors), "errors": errors}


def _auto_annotate(settings: Settings, args: argparse.Namespace) -> int:
    models = ModelIds.of(engine_spec(settings).model_id, concept_spec(settings))
    if args.local or not settings.job_redis_url:
        status = _run_local(settings, args, models)
    else:
        from backend.autoannotate.progress import RunProgress
        from backend.autoannotate.runs import (
            BATCH_REDIS_TIMEOUT_S,
            QueueRedis,
            start_run,
        )

        queue_redis = QueueRedis(settings, timeout_s=BATCH_REDIS_TIMEOUT_S)
        tasks = [int(t) for t in args.tasks.split(",")] if args.tasks else "all"
        run_id = start_run(settings, queue_redis, models, args.project, tasks, _options(args))
        print(f"started auto-annotate run {run_id}; workers: python -m backend worker", file=sys.stderr)
        with queue_redis.connection() as connection:
            status = _follow(RunProgress(connection), run_id)
    print(f"{status['done']} of {status['total']} tasks done, {status['failed']} failed")
    for error in status["errors"]:
        print(f"  task {error['task']}: {error['error']}")
    return 1 if status["failed"] or status.get("planning_error") else 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "worker":
            from backend.autoannotate.runs import BATCH_REDIS_TIMEOUT_S, QueueRedis
            from backend.autoannotate.worker import run_worker

            run_worker(QueueRedis(settings, timeout_s=BATCH_REDIS_TIMEOUT_S).get(), settings.rq_queue, burst=args.burst)
            return 0
        return _auto_annotate(settings, args)
    except BackendError as exc:
        print(f"error: {exc.message}\n  fix: {exc.fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
