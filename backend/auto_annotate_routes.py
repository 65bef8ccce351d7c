"""POST /auto-annotate and GET /auto-annotate/<job_id>."""
from __future__ import annotations

import redis
from flask import Blueprint, Response, jsonify

from backend.errors import NotFound
from backend.job_progress import JobProgress
from backend.request_body import json_object
from backend.runs import redis_for_runs, start_run
from backend.settings import Settings


def auto_annotate_blueprint(settings: Settings, model_id: str) -> Blueprint:
    routes = Blueprint("auto_annotate", __name__)
    connections: list[redis.Redis] = []

    def runs_redis() -> redis.Redis:
        """One client per app, made on first use (so a backend without REDIS_URL still starts)."""
        if not connections:
            connections.append(redis_for_runs(settings))
        return connections[0]

    @routes.post("/auto-annotate")
    def start() -> tuple[Response, int]:
        body = json_object()
        run_id = start_run(settings, runs_redis(), model_id, body.get("project"),
                           body.get("tasks", "all"), body.get("options"))
        return jsonify(job_id=run_id, status_url=f"/auto-annotate/{run_id}"), 202

    @routes.get("/auto-annotate/<run_id>")
    def status(run_id: str) -> Response:
        found = JobProgress(runs_redis()).status(run_id)
        if found is None:
            raise NotFound(f"no auto-annotate job {run_id!r}", "job ids come from POST /auto-annotate; they expire after 7 days")
        return jsonify(found)

    return routes
