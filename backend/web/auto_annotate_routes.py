"""POST /auto-annotate and GET /auto-annotate/<job_id>."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from backend.errors import NotFound
from backend.autoannotate.progress import JobProgress
from backend.web.request_body import json_object
from backend.autoannotate.runs import QueueRedis, queue_redis_errors, start_run
from backend.settings import Settings


def auto_annotate_blueprint(settings: Settings, model_id: str) -> Blueprint:
    routes = Blueprint("auto_annotate", __name__)
    # Connected and checked on first use, so a backend without a queue Redis still starts.
    queue_redis = QueueRedis(settings)

    @routes.post("/auto-annotate")
    def start() -> tuple[Response, int]:
        body = json_object()
        run_id = start_run(settings, queue_redis.get(), model_id, body.get("project"),
                           body.get("tasks", "all"), body.get("options"))
        return jsonify(job_id=run_id, status_url=f"/auto-annotate/{run_id}"), 202

    @routes.get("/auto-annotate/<run_id>")
    def status(run_id: str) -> Response:
        with queue_redis_errors(settings):
            found = JobProgress(queue_redis.get()).status(run_id)
        if found is None:
            raise NotFound(f"no auto-annotate job {run_id!r}", "job ids come from POST /auto-annotate; they expire after 7 days")
        return jsonify(found)

    return routes
