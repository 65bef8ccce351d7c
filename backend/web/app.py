"""The Flask app Label Studio talks to: the blueprints, the per-request hooks and the error replies.

The services come from the composition root (backend.wiring); what only the web process
needs is added here (the batch annotator of AUTO_ANNOTATE_ON_PREDICT, which hands big batches
to RQ). Every error leaves as JSON `{"error", "message", "fix"}` with a 4xx/5xx status; each
request logs one line with its timings, never bodies or tokens.
"""

from __future__ import annotations

import logging
import re
import threading
import time

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.autoannotate.annotator import AutoAnnotator, PredictAutoAnnotator, options_from_setting
from backend.autoannotate.runs import run_starter
from backend.engines.engine import RETRY_AFTER_S, Engine
from backend.errors import BackendError, Overloaded, Unauthorized
from backend.interactive.model import SamBackend
from backend.settings import Settings
from backend.web.auth import check_basic_auth
from backend.web.auto_annotate_routes import auto_annotate_blueprint
from backend.web.json_provider import OrjsonProvider
from backend.web.protocol_routes import protocol_blueprint
from backend.web.tryit_routes import tryit_blueprint
from backend.wiring import build_backend

log = logging.getLogger(__name__)
REASON_MAX_CHARS = 300
QUIET_ROUTES = ("/health", "/metrics", "/")  # polled often: their request lines log at DEBUG


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """The WSGI app. `engine` replaces the configured one (tests); the model loads in the background."""
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)
    try:
        backend, images = build_backend(settings, engine)
    except BackendError as exc:  # e.g. no checkpoint: say what to do before gunicorn's traceback
        log.critical("cannot start: %s. Fix: %s", exc.message, exc.fix)
        raise
    metrics = backend.metrics
    app = Flask("sam_backend")
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["sam_backend"] = backend
    if settings.auto_annotate_on_predict:
        backend.batch_annotator = PredictAutoAnnotator(
            AutoAnnotator(backend),
            options_from_setting(settings.auto_annotate_options),
            settings.auto_annotate_max_sync_tasks,
            run_starter(settings),
        )
    app.register_blueprint(protocol_blueprint(settings, backend, images))
    app.register_blueprint(auto_annotate_blueprint(settings, AutoAnnotator(backend).model_ids))
    app.register_blueprint(tryit_blueprint(settings, backend))
    threading.Thread(target=_preload, args=(backend,), name="model-load", daemon=True).start()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        check_basic_auth(request.headers.get("Authorization"), settings.basic_auth_user, settings.basic_auth_pass)

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        outcome = f"{response.status_code // 100}xx"
        metrics.requests.labels(route=route, outcome=outcome).inc()
        metrics.request_seconds.labels(route=route, outcome=outcome).observe(seconds)
        # What the route chose to log (a click: its timings, backend.interactive.model.ClickTimings).
        fields = g.get("log_fields", {})
        timings = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        level = logging.DEBUG if request.path in QUIET_ROUTES and response.status_code < 400 else logging.INFO
        log.log(level, "%s %s %d %.3fs %s", request.method, request.path, response.status_code, seconds, timings)
        return response

    @app.errorhandler(BackendError)
    def _backend_error(exc: BackendError) -> Response:
        headers = {}
        if isinstance(exc, Overloaded):
            headers["Retry-After"] = str(RETRY_AFTER_S)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Basic realm="sam-backend"'
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return _error_response(exc.to_json(), exc.status, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc, RequestEntityTooLarge):
            body = {
                "error": "payload_too_large",
                "message": f"request body is larger than MAX_REQUEST_BYTES={settings.max_request_bytes}",
                "fix": "send fewer tasks per request or raise MAX_REQUEST_BYTES",
            }
        else:
            body = {"error": (exc.name or "error").lower().replace(" ", "_"), "message": exc.description or ""}
        return _error_response(body, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(
            {"error": "internal_error", "message": f"{type(exc).__name__}: the backend hit a bug; see its log"}
        ), 500

    return app


def _error_response(body: dict, status: int, headers: dict | None = None) -> Response:
    """The JSON error, with its message and fix also in the status line's reason phrase.

    Label Studio shows annotators only the status line of a failed /predict
    ("424 Client Error: <reason> for url: ..."), never the body, so the reason is the one
    place where the cause and the fix can reach them.
    """
    response = jsonify(body)
    text = " ".join(part for part in (body.get("message"), body.get("fix")) if part)
    reason = re.sub(r"[^\x20-\x7e]+", " ", text).strip()[:REASON_MAX_CHARS]
    response.status = f"{status} {reason}" if reason else str(status)
    response.headers.update(headers or {})
    return response


def _preload(backend: SamBackend) -> None:
    """Load the weights now, in this (post-fork) worker, so the first click (or phrase) does not wait for them."""
    loaders = [backend.engine.load] + ([backend.concepts.concepts.load] if backend.concepts else [])
    for load in loaders:
        try:
            load()
        except BackendError as exc:
            log.error("%s (%s)", exc.message, exc.fix)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    root.setLevel(level.upper())
