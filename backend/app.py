"""The Flask app Label Studio talks to: /health, /setup, /predict, /webhook, /metrics.

This is the wiring: the one place (with the worker and the CLI) that reads Settings and hands
plain values to the modules. Every error leaves as JSON `{"error", "message", "fix"}` with a
4xx/5xx status; each request logs one line with its timings, never bodies or tokens.
"""
from __future__ import annotations

import logging
import re
import threading
import time

import numpy as np
from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.allocator import keep_freed_memory
from backend.auth import check_basic_auth
from backend.auto_annotate import AutoAnnotator, PredictAutoAnnotator, options_from_setting
from backend.auto_annotate_routes import auto_annotate_blueprint
from backend.cache import EmbeddingCache
from backend.download_slots import DownloadSlots, download_slots_for
from backend.engine import RETRY_AFTER_S, Engine, ServingEngine, engine_spec, spec_for
from backend.errors import BackendError, BadRequest, ImageFetchError, Overloaded, Unauthorized
from backend.images import ImageFetcher, ImageRef, load_image, resolve_image_ref
from backend.json_provider import OrjsonProvider
from backend.logits_store import LogitsStore
from backend.ls_address import SetupInfo, SetupStore, address_warnings, parse_setup
from backend.ls_client import LabelStudioAuthError, LabelStudioClient
from backend.metrics import Metrics
from backend.model import Limits, SamBackend
from backend.openapi import openapi_spec
from backend.outputs.regions import mask_to_regions
from backend.request_body import json_object
from backend.runs import run_starter
from backend.settings import Settings

log = logging.getLogger("backend.app")
LOGITS_LOCAL_BYTES = 64 * 2**20  # ~256 previous-click logits (256 KiB each) per process
REASON_MAX_CHARS = 300
QUIET_ROUTES = ("/health", "/metrics", "/")  # polled often: their request lines log at DEBUG


class LabelStudioImages:
    """Task images through backend.images, with LS credentials from the environment or /setup.

    backend.ls_address's rules: LABEL_STUDIO_API_KEY only ever goes to LABEL_STUDIO_URL; a
    /setup hostname (used only while LABEL_STUDIO_URL is unset) only with the access_token that
    came with it. What /setup said reaches every process through Redis when there is one.
    """

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        # With both variables set nothing of /setup is used, so nothing of it is kept or shared.
        self._uses_setup = not (settings.label_studio_url and settings.label_studio_api_key)
        self._setup = SetupStore(settings.job_redis_url if self._uses_setup else "",
                                 f"sam-backend:{settings.rq_queue}:ls-setup")
        self._identity: SetupInfo | None = None
        self._base_url = ""
        self._fetcher = self._build("", "")
        self._downloads = DownloadSlots(download_slots_for(settings.threads))

    def configure(self, body: dict) -> None:
        """/setup: a bad body is a 400 before anything is kept, so it cannot break later clicks."""
        info = parse_setup(body, token_required=not self._settings.label_studio_url)
        if info is not None and self._uses_setup:
            self._setup.learn(info)

    def _current(self) -> tuple[str, ImageFetcher]:
        """The LS base URL and fetcher for what the latest /setup (in any process) said."""
        info = self._setup.current() if self._uses_setup else None
        with self._lock:
            if info is not None and info != self._identity:
                self._fetcher = self._build(info.hostname, info.access_token)
                self._identity = info
            return self._base_url, self._fetcher

    def _build(self, hostname: str, access_token: str) -> ImageFetcher:
        s = self._settings
        if s.label_studio_url:
            base, token = s.label_studio_url, s.label_studio_api_key or access_token
        else:  # never LABEL_STUDIO_API_KEY here: it belongs to LABEL_STUDIO_URL alone
            base, token = hostname, access_token
        client = None
        if base:
            client = LabelStudioClient(base, api_key=token, timeout=s.fetch_timeout_s)
        self._base_url = base
        return ImageFetcher(client, local_files_root=s.local_files_document_root, max_image_bytes=s.max_image_bytes,
                            allow_private_image_urls=s.allow_private_image_urls, timeout=s.fetch_timeout_s,
                            deadline_s=s.download_deadline_s)

    def resolve(self, task: dict, value_key: str) -> ImageRef:
        base_url, _ = self._current()
        try:
            return resolve_image_ref(task, value_key, ls_base_url=base_url,
                                     local_files_root=self._settings.local_files_document_root)
        except ImageFetchError as exc:
            raise self._explained(exc) from None

    def _explained(self, exc: ImageFetchError) -> ImageFetchError:
        """The LS address is unknown: say which of LABEL_STUDIO_URL, /setup or Redis is missing here."""
        if exc.code != "label_studio_url_missing":
            return exc
        s = self._settings
        fix = "Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
        if self._setup.configured and not self._setup.shared:
            why = "Redis, through which the processes share what /setup said, is unreachable"
            fix += ", or bring Redis back"
        elif self._setup.configured:
            why = "no /setup has reached any process of this backend in the last day"
            fix += ", or make LS send /setup: reconnect the model (project Settings -> Model) or open a task"
        elif s.workers > 1:
            why = (f"/setup reached another of the WORKERS={s.workers} processes, and without Redis "
                   "(REDIS_URL or QUEUE_REDIS_URL) they cannot share it")
            fix += " (required with WORKERS > 1 and no Redis), or set REDIS_URL"
        else:
            why = "no /setup has reached this process since it started"
            fix += ", or connect the model in LS (project Settings -> Model), which sends /setup"
        return ImageFetchError(f"{exc.message}: LABEL_STUDIO_URL is not set and {why}", fix, code=exc.code)

    def load(self, ref: ImageRef) -> np.ndarray:
        _, fetcher = self._current()
        with self._downloads.slot():  # slow image hosts must leave threads for /health and cached clicks
            try:
                return load_image(ref, fetcher, max_image_pixels=self._settings.max_image_pixels)
            except ImageFetchError as exc:  # a cloud URI needs LS's presign endpoint, hence its address
                raise self._explained(exc) from None
            except LabelStudioAuthError as exc:
                if self._settings.label_studio_url:
                    raise
                raise LabelStudioAuthError(
                    f"{exc.message}; the token was the access_token LS sent in /setup",
                    "Set LABEL_STUDIO_URL together with LABEL_STUDIO_API_KEY (the key is only ever sent to "
                    "LABEL_STUDIO_URL), or check that legacy tokens are enabled for the organization in LS",
                ) from None


def build_backend(settings: Settings, engine: Engine | None = None) -> tuple[SamBackend, LabelStudioImages]:
    """The model object with its collaborators, built from settings (no weights loaded yet)."""
    # Process-wide, and here because every process that serves the model (gunicorn worker,
    # RQ worker, CLI) builds it through this function.
    keep_freed_memory(settings.cpu_memory_keep_mb)
    metrics = Metrics()
    spec = spec_for(engine) if engine is not None else engine_spec(settings)
    serving = ServingEngine(spec, on_encode=metrics.encoder_seconds.observe, on_decode=metrics.decoder_seconds.observe)
    cache = EmbeddingCache(settings.embedding_cache_mb * 2**20, settings.redis_url, ttl_s=settings.embedding_ttl_s,
                           lock_timeout_s=settings.embedding_lock_timeout_s, check=serving.check_embedding,
                           max_pixels=settings.max_image_pixels,
                           on_reject=metrics.cache_rejected.labels(kind="embedding").inc)
    logits = LogitsStore(LOGITS_LOCAL_BYTES, settings.redis_url, ttl_s=settings.logits_ttl_s,
                         on_reject=metrics.cache_rejected.labels(kind="logits").inc)
    images = LabelStudioImages(settings)
    limits = Limits(settings.max_prompt_points, settings.max_prompt_boxes, settings.max_tasks_per_request)
    backend = SamBackend(
        serving, cache, logits, images, mask_to_regions, metrics, limits,
        warm_queue_size=settings.warm_queue_size, warm_on_predict=settings.warm_on_predict,
        region_options={"tolerance_px": settings.polygon_tolerance_px, "min_area_px": settings.polygon_min_area_px},
    )
    if settings.auto_annotate_on_predict:
        options = options_from_setting(settings.auto_annotate_options)
        backend.batch_annotator = PredictAutoAnnotator(AutoAnnotator(backend), options,
                                                       settings.auto_annotate_max_sync_tasks, run_starter(settings))
    return backend, images


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
    app.register_blueprint(auto_annotate_blueprint(settings, backend.engine.model_id))
    threading.Thread(target=_preload, args=(backend.engine,), name="model-load", daemon=True).start()

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        g.timings = {}
        check_basic_auth(request.headers.get("Authorization"), settings.basic_auth_user, settings.basic_auth_pass)

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        outcome = f"{response.status_code // 100}xx"
        metrics.requests.labels(route=route, outcome=outcome).inc()
        metrics.request_seconds.labels(route=route, outcome=outcome).observe(seconds)
        timings = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in g.get("timings", {}).items())
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
            body = {"error": "payload_too_large",
                    "message": f"request body is larger than MAX_REQUEST_BYTES={settings.max_request_bytes}",
                    "fix": "send fewer tasks per request or raise MAX_REQUEST_BYTES"}
        else:
            body = {"error": (exc.name or "error").lower().replace(" ", "_"), "message": exc.description or ""}
        return _error_response(body, exc.code or 500)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify({"error": "internal_error", "message": f"{type(exc).__name__}: the backend hit a bug; see its log"}), 500

    warnings = address_warnings(settings.label_studio_url, settings.label_studio_api_key, settings.workers,
                                settings.job_redis_url)
    for warning in warnings:
        log.warning("%s", warning)

    @app.get("/")
    @app.get("/health")
    def health() -> tuple[Response, int]:
        engine = backend.engine
        body = dict(status="UP", model_class=type(backend).__name__, model_version=backend.model_version,
                    model_loaded=engine.loaded, **engine.spec.info, warnings=warnings)
        if engine.load_error:  # LS then shows the backend as failing, with this message
            return jsonify({**body, "status": "ERROR", "error": engine.load_error}), 503
        return jsonify(body), 200

    @app.post("/setup")
    def setup() -> Response:
        images.configure(json_object())
        return jsonify(model_version=backend.model_version)

    @app.get("/versions")
    def versions() -> Response:
        """LS's model page asks which versions exist (ml/api.py MLBackendVersionsAPI); without this
        route it shows "Upgrade your ML backend version to latest". The one this backend serves."""
        return jsonify(versions=[backend.model_version])

    @app.post("/predict")
    def predict() -> Response:
        body = json_object()
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("params must be an object")
        results = backend.predict(body.get("tasks"), params.get("context"), label_config=body.get("label_config"),
                                  timings=g.timings)
        g.timings["tasks"] = len(results)
        return jsonify(results=results)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        body = json_object()
        action = body.get("action")
        return jsonify(backend.fit(action if isinstance(action, str) else "", body)), 200

    @app.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi_spec())

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type)

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


def _preload(engine: ServingEngine) -> None:
    """Load the weights now, in this (post-fork) worker, so the first click does not wait for it."""
    try:
        engine.load()
    except BackendError as exc:
        log.error("%s (%s)", exc.message, exc.fix)


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s")
    root.setLevel(level.upper())
