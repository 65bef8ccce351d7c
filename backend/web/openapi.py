"""OpenAPI 3 description of the backend's JSON routes, as a plain dict (no extra dependency).

Why it exists: integrators (LS admins, scripts calling /auto-annotate) get one place that
lists every route, body and error; the reliability tests fuzz the live server against it
(schemathesis), so the description and the code cannot drift apart silently.

Every error body is `{"error": code, "message": cause, "fix"?: what to do}` (backend.errors).
Serve it with `app.get("/openapi.json")(lambda: jsonify(openapi_spec()))`.
"""
from __future__ import annotations

import copy
from typing import Any

_ERROR_STATUSES = {
    "400": "Malformed request: not a JSON object, wrong types, bad prompts or label config",
    "401": "Basic auth required (BASIC_AUTH_USER / BASIC_AUTH_PASS) and missing or wrong",
    "403": "The task's image is somewhere this backend must not read (outside the local-files root, a private address)",
    "404": "No such route or resource",
    "405": "Method not allowed on this route",
    "413": "Request body over MAX_REQUEST_BYTES, or image over MAX_IMAGE_BYTES / MAX_IMAGE_PIXELS",
    "415": "The task's image is not a raster image (SVG, HTML, unknown format)",
    "422": "Well-formed but unusable: corrupt image, size mismatch, no output control in the label config",
    "424": "An upstream failed: Label Studio or the image host could not be reached or refused",
    "503": "Temporarily unavailable: engine loading failed, GPU out of memory, Redis/workers missing (Retry-After)",
}

_NUMBER = {"type": "number"}
_STRING = {"type": "string"}


def _errors(*statuses: str) -> dict[str, Any]:
    return {
        status: {"description": _ERROR_STATUSES[status],
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for status in statuses
    }


def _json_body(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(ref: str, description: str, status: str = "200") -> dict[str, Any]:
    return {status: {"description": description,
                     "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


_COMMON = ("401", "404", "405")

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string", "description": "machine-readable code, e.g. bad_request"},
                       "message": {"type": "string", "description": "the cause, naming the field, limit or tag"},
                       "fix": {"type": "string", "description": "what to change"}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "model_class", "model_version", "model_loaded"],
        "properties": {"status": {"type": "string", "enum": ["UP"]}, "model_class": _STRING,
                       "model_version": _STRING, "model_loaded": {"type": "boolean"},
                       "engine": {"type": "string", "description": "sam | grabcut (or an injected engine's class)"},
                       "warnings": {"type": "array", "items": _STRING,
                                    "description": "configurations that will fail some clicks or ignore a setting"}},
        "additionalProperties": True,
    },
    "Setup": {
        "type": "object",
        "description": "What LS sends when connecting, opening a task or retrieving predictions "
                       "(ls-samples/setup_request.json); no model loading happens here. hostname and access_token "
                       "are used only while LABEL_STUDIO_URL is unset, and only together; LABEL_STUDIO_API_KEY "
                       "never goes to hostname.",
        "properties": {"project": _STRING, "schema": _STRING,
                       "hostname": {"type": "string", "nullable": True, "maxLength": 2048,
                                    "description": "LS's base URL: absolute http(s), a host, a port in 1-65535, "
                                                   "no credentials, query or fragment (else 400)"},
                       "access_token": {"type": "string", "nullable": True, "maxLength": 4096,
                                        "description": "visible ASCII; required with hostname when "
                                                       "LABEL_STUDIO_URL is unset (else 400)"},
                       "extra_params": {"nullable": True}},
        "additionalProperties": True,
    },
    "Versions": {"type": "object", "required": ["versions"],
                 "properties": {"versions": {"type": "array", "items": _STRING}}},
    "SetupResult": {"type": "object", "required": ["model_version"], "properties": {"model_version": _STRING}},
    "Task": {
        "type": "object",
        "properties": {"id": {"type": "integer"},
                       "data": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": "task data; the <Image value=\"$key\"> key holds the image URL"}},
        "additionalProperties": True,
    },
    "Region": {
        "type": "object",
        "description": "A smart prompt region: keypointlabels (value.x/y %) or rectanglelabels (x, y, width, height %)",
        "required": ["original_width", "original_height", "value", "to_name", "type"],
        "properties": {
            "original_width": {"type": "integer", "minimum": 1}, "original_height": {"type": "integer", "minimum": 1},
            "image_rotation": _NUMBER, "is_positive": {"type": "boolean"},
            "from_name": _STRING, "to_name": _STRING, "id": _STRING,
            "type": {"type": "string", "enum": ["keypointlabels", "rectanglelabels"]},
            "value": {"type": "object", "properties": {
                "x": _NUMBER, "y": _NUMBER, "width": _NUMBER, "height": _NUMBER, "rotation": _NUMBER,
                "positive": {"type": "boolean"},
                "keypointlabels": {"type": "array", "items": _STRING},
                "rectanglelabels": {"type": "array", "items": _STRING}},
                "additionalProperties": True},
        },
        "additionalProperties": True,
    },
    "PredictRequest": {
        "type": "object",
        "required": ["tasks", "label_config"],
        "properties": {
            "tasks": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Task"},
                      "description": "interactive: only tasks[0] is used; batch: at most MAX_TASKS_PER_REQUEST"},
            "label_config": {"type": "string", "description": "the project's labeling config XML"},
            "project": _STRING,
            "params": {"type": "object", "properties": {
                "context": {"type": "object", "nullable": True,
                            "description": "null: warm the cache, no predictions; with result: a mask",
                            "properties": {"result": {"type": "array", "items": {"$ref": "#/components/schemas/Region"}}}},
                "login": {"nullable": True}, "password": {"nullable": True}}, "additionalProperties": True},
        },
        "additionalProperties": True,
    },
    "Prediction": {
        "type": "object",
        "required": ["result", "score", "model_version"],
        "properties": {"result": {"type": "array", "items": {"type": "object"},
                                  "description": "LS regions: brushlabels (RLE), polygonlabels or rectanglelabels"},
                       "score": _NUMBER, "model_version": _STRING},
    },
    "PredictResult": {
        "type": "object", "required": ["results"],
        "properties": {"results": {
            "type": "array",
            "description": "one entry per task: a prediction, or [] for none (a cache warm-up: LS stores nothing)",
            "items": {"oneOf": [{"$ref": "#/components/schemas/Prediction"}, {"type": "array", "maxItems": 0}]}}},
    },
    "WebhookEvent": {
        "type": "object", "properties": {"action": _STRING, "project": {"type": "object"}},
        "additionalProperties": True,
    },
    "WebhookResult": {"type": "object", "required": ["status", "message"],
                      "properties": {"status": _STRING, "message": _STRING}},
    "AutoAnnotateRequest": {
        "type": "object",
        "required": ["project"],
        "properties": {
            "project": {"type": "integer", "minimum": 1},
            "tasks": {"oneOf": [{"type": "string", "enum": ["all"]},
                                {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1}}],
                      "default": "all"},
            "options": {"type": "object", "additionalProperties": False, "properties": {
                "mode": {"type": "string", "enum": ["masks", "embeddings"]},
                "output": {"type": "string", "enum": ["brush", "polygon", "rectangle"], "nullable": True},
                "label": {"type": "string", "nullable": True},
                "max_masks": {"type": "integer", "minimum": 1, "maximum": 10000},
                "min_area": {"type": "integer", "minimum": 0},
                "amg_mode": {"type": "string", "enum": ["fast", "exact"]},
                "points_per_side": {"type": "integer", "minimum": 1, "maximum": 128},
                "points_per_batch": {"type": "integer", "minimum": 1, "maximum": 4096},
                "pred_iou_thresh": {"type": "number", "minimum": 0, "maximum": 1},
                "stability_score_thresh": {"type": "number", "minimum": 0, "maximum": 1},
                "stability_score_offset": {"type": "number", "minimum": 0, "maximum": 100},
                "box_nms_thresh": {"type": "number", "minimum": 0, "maximum": 1},
                "crop_n_layers": {"type": "integer", "minimum": 0, "maximum": 3},
                "crop_nms_thresh": {"type": "number", "minimum": 0, "maximum": 1},
                "crop_overlap_ratio": {"type": "number", "minimum": 0, "maximum": 1},
                "crop_n_points_downscale_factor": {"type": "integer", "minimum": 1, "maximum": 8},
                "min_mask_region_area": {"type": "integer", "minimum": 0}}},
        },
    },
    "AutoAnnotateStarted": {"type": "object", "required": ["job_id", "status_url"],
                            "properties": {"job_id": _STRING, "status_url": _STRING}},
    "AutoAnnotateStatus": {
        "type": "object",
        "required": ["job_id", "state", "project", "total", "done", "failed", "errors"],
        "properties": {
            "job_id": _STRING,
            "state": {"type": "string", "enum": ["queued", "running", "finished", "finished_with_errors", "failed"]},
            "project": {"type": "integer"}, "total": {"type": "integer"}, "done": {"type": "integer"},
            "failed": {"type": "integer"}, "planning": {"type": "boolean"},
            "planning_error": {"type": "string", "nullable": True},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "task": {"type": "integer"}, "error": _STRING}}},
            "timings": {"type": "object"},
        },
    },
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "SAM ML backend for Label Studio", "version": "1",
             "description": "Label Studio's ML backend protocol (/health, /setup, /predict, /webhook) "
                            "plus metrics and batch auto-annotation. Errors: {error, message, fix}."},
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic",
                                          "description": "only when BASIC_AUTH_USER / BASIC_AUTH_PASS are set"}},
    },
    "security": [{}, {"basicAuth": []}],
    "paths": {
        "/health": {"get": {"summary": "Liveness and model status (LS polls it with a 1 s timeout)",
                            "responses": {**_ok("Health", "up"), **_errors(*_COMMON)}}},
        "/": {"get": {"summary": "Same as /health", "responses": {**_ok("Health", "up"), **_errors(*_COMMON)}}},
        "/setup": {"post": {"summary": "LS connects: remembers hostname and access_token, answers the model version",
                            "requestBody": _json_body("Setup"),
                            "responses": {**_ok("SetupResult", "connected"), **_errors("400", "413", *_COMMON)}}},
        "/versions": {"get": {"summary": "The model versions this backend serves (LS's model page asks)",
                              "responses": {**_ok("Versions", "the versions"), **_errors(*_COMMON)}}},
        "/predict": {"post": {
            "summary": "Interactive mask for tasks[0] (context.result) or cache warm-up for each task (no context)",
            "requestBody": _json_body("PredictRequest"),
            "responses": {**_ok("PredictResult", "one prediction per task"),
                          **_errors("400", "403", "413", "415", "422", "424", "503", *_COMMON)}}},
        "/webhook": {"post": {"summary": "LS events (START_TRAINING, ANNOTATION_CREATED, ...): acknowledged, no training",
                              "requestBody": _json_body("WebhookEvent"),
                              "responses": {**_ok("WebhookResult", "acknowledged"), **_errors("400", "413", *_COMMON)}}},
        "/metrics": {"get": {"summary": "Prometheus metrics of this process",
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}},
                                           **_errors(*_COMMON)}}},
        "/auto-annotate": {"post": {
            "summary": "Start pre-labelling a project's tasks with automatic masks (RQ workers do the work)",
            "requestBody": _json_body("AutoAnnotateRequest"),
            "responses": {**_ok("AutoAnnotateStarted", "run queued", "202"),
                          **_errors("400", "413", "422", "424", "503", *_COMMON)}}},
        "/auto-annotate/{job_id}": {"get": {
            "summary": "Progress of a run: counts, state, and every failed task with its reason",
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {**_ok("AutoAnnotateStatus", "the run's state"), **_errors("503", *_COMMON)}}},
    },
}


def openapi_spec() -> dict[str, Any]:
    """A fresh copy of the description (callers may add `servers` without touching the original)."""
    return copy.deepcopy(OPENAPI)
