"""What an RQ worker process holds between jobs: settings, the model, caches, the LS client.

Built once per process on the first job (the model loads after the worker started, never
in a parent that forks), so a worker labelling thousands of tasks loads the weights once.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis

from backend.app import build_backend
from backend.auto_annotate import AutoAnnotateOptions, AutoAnnotator
from backend.job_progress import JobProgress
from backend.label_config import OutputTarget
from backend.ls_client import LabelStudioClient
from backend.runs import label_studio_client
from backend.settings import Settings


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
        return redis.Redis.from_url(self.settings.job_redis_url, socket_timeout=10, health_check_interval=30)

    @cached_property
    def progress(self) -> JobProgress:
        return JobProgress(self.redis)

    @cached_property
    def annotator(self) -> AutoAnnotator:
        backend, _ = build_backend(self.settings)
        return AutoAnnotator(backend)

    @cached_property
    def ls(self) -> LabelStudioClient:
        return label_studio_client(self.settings)

    def annotate_task(self, task_id: int, spec: dict[str, Any]) -> dict[str, Any]:
        """Do one task of a run: warm its embedding, or post its AMG prediction to LS."""
        options = AutoAnnotateOptions(**spec["options"])
        task = self.ls.get_task(task_id)
        if options.mode == "embeddings":
            return {"cache": self.annotator.warm(task, spec["value_key"])}
        target = OutputTarget(**spec["target"])
        prediction = self.annotator.annotate(task, target, spec["value_key"], options)
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
