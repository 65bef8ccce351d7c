"""The Label Studio ML backend protocol: /, /health, /setup, /versions, /predict, /webhook,
plus /openapi.json and /metrics. What each route does with a request is the SamBackend's job
(backend.interactive.model); here bodies are read and answers written. A browser asking for
/ gets the try-it page instead of the health JSON (backend.web.tryit_routes)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Blueprint, Response, g, jsonify, request

from backend.errors import BadRequest
from backend.images.source import LabelStudioImages
from backend.interactive.model import SamBackend
from backend.labelstudio.address import address_warnings
from backend.settings import Settings
from backend.web.openapi import openapi_spec
from backend.web.request_body import json_object
from backend.web.tryit_routes import page, wants_page

log = logging.getLogger(__name__)


def protocol_blueprint(settings: Settings, backend: SamBackend, images: LabelStudioImages) -> Blueprint:
    routes = Blueprint("protocol", __name__)
    metrics = backend.metrics
    warnings = address_warnings(
        settings.label_studio_url,
        settings.label_studio_api_key,
        settings.workers,
        settings.job_redis_url,
        bool(settings.basic_auth_user or settings.basic_auth_pass),
    )
    for warning in warnings:
        log.warning("%s", warning)

    @routes.get("/")
    @routes.get("/health")
    def health() -> tuple[Response, int]:
        if request.path == "/" and wants_page(request.accept_mimetypes):  # a browser: the try-it page
            return page(), 200
        engine = backend.engine
        body = dict(
            status="UP",
            model_class=type(backend).__name__,
            model_version=backend.model_version,
            model_loaded=engine.loaded,
            **engine.spec.info,
            concepts=backend.concepts.concepts.info() if backend.concepts else None,
            warnings=warnings,
        )
        status = 200
        if engine.load_error:  # LS then shows the backend as failing, with this message
            body, status = {**body, "status": "ERROR", "error": engine.load_error}, 503
        response = jsonify(body)
        response.vary.add("Accept")  # / answers the page or this JSON by it: caches must keep them apart
        return response, status

    @routes.post("/setup")
    def setup() -> Response:
        images.configure(json_object())
        return jsonify(model_version=backend.model_version)

    @routes.get("/versions")
    def versions() -> Response:
        """LS's model page asks which versions exist (ml/api.py MLBackendVersionsAPI); without this
        route it shows "Upgrade your ML backend version to latest". The one this backend serves."""
        return jsonify(versions=[backend.model_version])

    @routes.post("/predict")
    def predict() -> Response:
        body = json_object()
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("params must be an object")
        answer = backend.predict(body.get("tasks"), params.get("context"), label_config=body.get("label_config"))
        fields = answer.timings.log_fields() if answer.timings else {}
        g.log_fields = {**fields, "tasks": len(answer.results)}
        response = jsonify(results=answer.results)
        if fields:  # a click: its timings for the try-it page, outside the body LS reads
            response.headers["Server-Timing"] = server_timing(fields)
        return response

    @routes.post("/webhook")
    def webhook() -> tuple[Response, int]:
        body = json_object()
        action = body.get("action")
        return jsonify(backend.fit(action if isinstance(action, str) else "", body)), 200

    @routes.get("/openapi.json")
    def openapi_json() -> Response:
        return jsonify(openapi_spec())

    @routes.get("/metrics")
    def metrics_route() -> Response:
        return Response(metrics.render(), mimetype=metrics.content_type)

    return routes


def server_timing(fields: Mapping[str, float | str]) -> str:
    """A click's log fields as a Server-Timing header: seconds as `name;dur=<ms>`, the cache
    level (local, redis, computed) as `cache;desc=<level>`."""
    return ", ".join(
        f"{name};dur={value * 1000:.1f}" if isinstance(value, float) else f"{name};desc={value}"
        for name, value in fields.items()
    )
