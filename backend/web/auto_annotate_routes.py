"""POST /auto-annotate (start a run) and GET /auto-annotate/<run_id> (its progress)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from backend.autoannotate.annotator import ModelIds
from backend.autoannotate.progress import RunProgress, is_run_id
from backend.autoannotate.runs import QueueRedis, start_run
from backend.errors import NotFound
from backend.settings import Settings
from backend.web.request_body import json_object


def auto_annotate_blueprint(settings: Settings, models: ModelIds) -> Blueprint:
    routes = Blueprint("auto_annotate", __name__)
    # Connected and checked on first use, so a backend without a queue Redis still starts.
    queue_redis = QueueRedis(settings)

    @routes.post("/auto-annotate")
    def start() -> tuple[Response, int]:
        body = json_object()
        run_id = start_run(
            settings, queue_redis, models, body.get("project"), body.get("tasks", "all"), body.get("options")
        )
        # job_id: what run_id was called before; kept (deprecated) for scripts that read it.
        return jsonify(run_id=run_id, status_url=f"/auto-annotate/{run_id}", job_id=run_id), 202

    @routes.get("/auto-annotate/<run_id>")
    def status(run_id: str) -> Response:
        found = None
        if is_run_id(run_id):
            with queue_redis.connection() as connection:
                found = RunProgress(connection).status(run_id)
        if found is None:
            raise NotFound(
                f"no auto-annotate run {run_id[:64]!r}",
                "run ids come from POST /auto-annotate (its run_id); runs expire after 7 days",
            )
        return jsonify(found)

    return routes
