"""OpenAPI 3 description of the backend's JSON routes, as a plain dict (no extra dependency).

Why it exists: integrators (LS admins, scripts calling /auto-annotate) get one place that
lists every route, body and error; the reliability tests fuzz the live server against it
(schemathesis), so the description and the code cannot drift apart silently.

Every error body is `{"error": code, "message": cause, "fix"?: what to do}` (backend.errors).
Serve it with `app.get("/openapi.json")(lambda: jsonify(openapi_spec()))`.

Names, bounds and defaults come from the modules that validate them (auto-annotate options
from annotator.OPTIONS, output and prompt types, id and size limits), never restated here.
"""

from __future__ import annotations

import copy
from typing import Any

from backend.autoannotate.annotator import LS_ID_MAX, MAX_MAPPED_LABELS, OPTIONS, Option, option_defaults
from backend.concepts.labelling import MAX_TEXT_CHARS
from backend.interactive.prompts import MAX_IMAGE_SIDE
from backend.labelstudio.address import MAX_TOKEN_CHARS, MAX_URL_CHARS
from backend.labelstudio.label_config import PROMPT_TYPES
from backend.outputs import REGION_TYPES
from backend.web.tryit_routes import ASSETS, TRY_DEFAULTS, TRY_OPTIONS

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
        status: {
            "description": _ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for status in statuses
    }


def _json_body(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _ok(ref: str, description: str, status: str = "200") -> dict[str, Any]:
    return {
        status: {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
        }
    }


_COMMON = ("401", "404", "405")
_LS_ID = {"type": "integer", "minimum": 1, "maximum": LS_ID_MAX}
_IMAGE_SIDE = {"type": "integer", "minimum": 1, "maximum": MAX_IMAGE_SIDE}


def _option_schema(option: Option, default: Any) -> dict[str, Any]:
    """One auto-annotate option as an OpenAPI 3.0 schema: what Option.parse accepts."""
    if option.kind is dict:
        phrases = {"type": "string", "maxLength": MAX_TEXT_CHARS, "pattern": r"[^.?\s]"}  # holds a phrase
        values = phrases if option.values is str else {"type": "number", "minimum": option.low, "maximum": option.high}
        schema: dict[str, Any] = {"type": "object", "additionalProperties": values, "maxProperties": MAX_MAPPED_LABELS}
    elif option.kind is str:
        schema = {"type": "string", **({"enum": list(option.choices)} if option.choices else {})}
    elif option.kind is bool:
        schema = {"type": "boolean"}
    else:
        schema = {"type": "integer" if option.kind is int else "number", "minimum": option.low, "maximum": option.high}
    if option.nullable:
        schema["nullable"] = True
    return {**schema, "default": default, "description": option.description}


def _options_schema(options: dict[str, Option] = OPTIONS, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    defaults = {**option_defaults(), **(defaults or {})}
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _option_schema(option, defaults[name]) for name, option in options.items()},
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "machine-readable code, e.g. bad_request"},
            "message": {"type": "string", "description": "the cause, naming the field, limit or tag"},
            "fix": {"type": "string", "description": "what to change"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "model_class", "model_version", "model_loaded"],
        "properties": {
            "status": {"type": "string", "enum": ["UP"]},
            "model_class": _STRING,
            "model_version": _STRING,
            "model_loaded": {"type": "boolean"},
            "engine": {"type": "string", "description": "sam | grabcut (or an injected engine's class)"},
            "concepts": {
                "type": "object",
                "nullable": True,
                "description": "CONCEPT_ENGINE (null when none): engine, model, model_id, loaded, find_similar, "
                "and error when loading failed",
                "additionalProperties": True,
            },
            "warnings": {
                "type": "array",
                "items": _STRING,
                "description": "configurations that will fail some clicks or ignore a setting",
            },
        },
        "additionalProperties": True,
    },
    "Setup": {
        "type": "object",
        "description": "What LS sends when connecting, opening a task or retrieving predictions "
        "(ls-samples/setup_request.json); no model loading happens here. hostname and access_token "
        "are used only while LABEL_STUDIO_URL is unset, and only together; LABEL_STUDIO_API_KEY "
        "never goes to hostname.",
        "properties": {
            "project": _STRING,
            "schema": _STRING,
            "hostname": {
                "type": "string",
                "nullable": True,
                "maxLength": MAX_URL_CHARS,
                "description": "LS's base URL: absolute http(s), a host, a port in 1-65535, "
                "no credentials, query or fragment (else 400)",
            },
            "access_token": {
                "type": "string",
                "nullable": True,
                "maxLength": MAX_TOKEN_CHARS,
                "description": "visible ASCII; required with hostname when LABEL_STUDIO_URL is unset (else 400)",
            },
            "extra_params": {"nullable": True},
        },
        "additionalProperties": True,
    },
    "Versions": {
        "type": "object",
        "required": ["versions"],
        "properties": {"versions": {"type": "array", "items": _STRING}},
    },
    "SetupResult": {"type": "object", "required": ["model_version"], "properties": {"model_version": _STRING}},
    "Task": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "data": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": 'task data; the <Image value="$key"> key holds the image URL',
            },
        },
        "additionalProperties": True,
    },
    "Region": {
        "type": "object",
        "description": f"A smart prompt region: {PROMPT_TYPES[0]} (value.x/y %) or {PROMPT_TYPES[1]} "
        "(x, y, width, height %)",
        "required": ["original_width", "original_height", "value", "to_name", "type"],
        "properties": {
            "original_width": _IMAGE_SIDE,
            "original_height": _IMAGE_SIDE,
            "image_rotation": _NUMBER,
            "is_positive": {"type": "boolean"},
            "from_name": _STRING,
            "to_name": _STRING,
            "id": _STRING,
            "type": {"type": "string", "enum": list(PROMPT_TYPES)},
            "value": {
                "type": "object",
                "properties": {
                    "x": _NUMBER,
                    "y": _NUMBER,
                    "width": _NUMBER,
                    "height": _NUMBER,
                    "rotation": _NUMBER,
                    "positive": {"type": "boolean"},
                    **{kind: {"type": "array", "items": _STRING} for kind in PROMPT_TYPES},
                },
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    },
    "PredictRequest": {
        "type": "object",
        "required": ["tasks", "label_config"],
        "properties": {
            "tasks": {
                "type": "array",
                "minItems": 1,
                "items": {"$ref": "#/components/schemas/Task"},
                "description": "interactive: only tasks[0] is used; batch: at most MAX_TASKS_PER_REQUEST",
            },
            "label_config": {"type": "string", "description": "the project's labeling config XML"},
            "project": _STRING,
            "params": {
                "type": "object",
                "properties": {
                    "context": {
                        "type": "object",
                        "nullable": True,
                        "description": "null: warm the cache, no predictions; with result: a mask",
                        "properties": {"result": {"type": "array", "items": {"$ref": "#/components/schemas/Region"}}},
                    },
                    "login": {"nullable": True},
                    "password": {"nullable": True},
                },
                "additionalProperties": True,
            },
        },
        "additionalProperties": True,
    },
    "Prediction": {
        "type": "object",
        "required": ["result", "score", "model_version"],
        "properties": {
            "result": {
                "type": "array",
                "items": {"type": "object"},
                "description": f"LS regions: {', '.join(REGION_TYPES.values())}",
            },
            "score": _NUMBER,
            "model_version": _STRING,
        },
    },
    "PredictResult": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {
                "type": "array",
                "description": "one entry per task: a prediction, or [] for none (a cache warm-up: LS stores nothing)",
                "items": {"oneOf": [{"$ref": "#/components/schemas/Prediction"}, {"type": "array", "maxItems": 0}]},
            }
        },
    },
    "WebhookEvent": {
        "type": "object",
        "properties": {"action": _STRING, "project": {"type": "object"}},
        "additionalProperties": True,
    },
    "WebhookResult": {
        "type": "object",
        "required": ["status", "message"],
        "properties": {"status": _STRING, "message": _STRING},
    },
    "AutoAnnotateRequest": {
        "type": "object",
        "required": ["project"],
        "properties": {
            "project": _LS_ID,
            "tasks": {
                "oneOf": [{"type": "string", "enum": ["all"]}, {"type": "array", "minItems": 1, "items": _LS_ID}],
                "default": "all",
            },
            "options": _options_schema(),
        },
    },
    "TryInfo": {
        "type": "object",
        "required": ["model_id", "model_loaded", "models", "embedding_cache", "automatic_masks"],
        "properties": {
            "model_id": _STRING,
            "model_loaded": {"type": "boolean"},
            "device": {"type": "string", "nullable": True, "description": "as loaded (auto resolved); null before"},
            "precision": {"type": "string", "nullable": True},
            "models": {
                "type": "array",
                "description": "every official model type; available: its checkpoint is in checkpoints/",
                "items": {
                    "type": "object",
                    "required": ["model", "family", "available", "in_use"],
                    "properties": {
                        "model": _STRING,
                        "family": _STRING,
                        "checkpoint": {"type": "string", "nullable": True},
                        "available": {"type": "boolean"},
                        "in_use": {"type": "boolean"},
                    },
                },
            },
            "embedding_cache": {
                "type": "object",
                "properties": {
                    "capacity_mb": {"type": "integer"},
                    "redis": {"type": "boolean"},
                    "lookups": {"type": "object", "additionalProperties": {"type": "integer"}},
                },
            },
            "max_request_bytes": {"type": "integer"},
            "automatic_masks": {"type": "object", "description": "each option's bounds or choices"},
        },
    },
    "TryAutomaticMasksRequest": {
        "type": "object",
        "required": ["image"],
        "properties": {
            "image": {"type": "string", "description": "a data: URI or an http(s) URL (fetched under the usual rules)"},
            "options": _options_schema(TRY_OPTIONS, TRY_DEFAULTS),
        },
    },
    "AutoAnnotateStarted": {
        "type": "object",
        "required": ["run_id", "status_url"],
        "properties": {"run_id": _STRING, "status_url": _STRING, "job_id": {**_STRING, "deprecated": True}},
    },
    "AutoAnnotateStatus": {
        "type": "object",
        "required": ["run_id", "state", "project", "total", "done", "failed", "errors"],
        "properties": {
            "run_id": _STRING,
            "state": {"type": "string", "enum": ["queued", "running", "finished", "finished_with_errors", "failed"]},
            "project": {"type": "integer"},
            "total": {"type": "integer"},
            "done": {"type": "integer"},
            "failed": {"type": "integer"},
            "planning": {"type": "boolean"},
            "planning_error": {"type": "string", "nullable": True},
            "errors": {
                "type": "array",
                "items": {"type": "object", "properties": {"task": {"type": "integer"}, "error": _STRING}},
            },
            "timings": {"type": "object"},
        },
    },
}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "SAM ML backend for Label Studio",
        "version": "1",
        "description": "Label Studio's ML backend protocol (/health, /setup, /predict, /webhook) "
        "plus metrics and batch auto-annotation. Errors: {error, message, fix}.",
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "basicAuth": {
                "type": "http",
                "scheme": "basic",
                "description": "only when BASIC_AUTH_USER / BASIC_AUTH_PASS are set",
            }
        },
    },
    "security": [{}, {"basicAuth": []}],
    "paths": {
        "/health": {
            "get": {
                "summary": "Liveness and model status (LS polls it with a 1 s timeout)",
                "responses": {**_ok("Health", "up"), **_errors(*_COMMON)},
            }
        },
        "/": {
            "get": {
                "summary": "Same as /health; a browser (Accept: text/html first) gets the try-it page",
                "responses": {
                    "200": {
                        "description": "up (JSON), or the try-it page (HTML)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Health"}},
                            "text/html": {"schema": _STRING},
                        },
                    },
                    **_errors(*_COMMON),
                },
            }
        },
        "/setup": {
            "post": {
                "summary": "LS connects: remembers hostname and access_token, answers the model version",
                "requestBody": _json_body("Setup"),
                "responses": {**_ok("SetupResult", "connected"), **_errors("400", "413", *_COMMON)},
            }
        },
        "/versions": {
            "get": {
                "summary": "The model versions this backend serves (LS's model page asks)",
                "responses": {**_ok("Versions", "the versions"), **_errors(*_COMMON)},
            }
        },
        "/predict": {
            "post": {
                "summary": "Interactive mask for tasks[0] (context.result) or cache warm-up for each task (no context)",
                "requestBody": _json_body("PredictRequest"),
                "responses": {
                    **_ok("PredictResult", "one prediction per task"),
                    **_errors("400", "403", "413", "415", "422", "424", "503", *_COMMON),
                },
            }
        },
        "/webhook": {
            "post": {
                "summary": "LS events (START_TRAINING, ANNOTATION_CREATED, ...): acknowledged, no training",
                "requestBody": _json_body("WebhookEvent"),
                "responses": {**_ok("WebhookResult", "acknowledged"), **_errors("400", "413", *_COMMON)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this process",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(*_COMMON),
                },
            }
        },
        "/auto-annotate": {
            "post": {
                "summary": "Start pre-labelling a project's tasks with automatic masks (RQ workers do the work)",
                "requestBody": _json_body("AutoAnnotateRequest"),
                "responses": {
                    **_ok("AutoAnnotateStarted", "run queued", "202"),
                    **_errors("400", "413", "422", "424", "503", *_COMMON),
                },
            }
        },
        "/try": {
            "get": {
                "summary": "The try-it page",
                "responses": {
                    "200": {"description": "the page", "content": {"text/html": {"schema": _STRING}}},
                    **_errors(*_COMMON),
                },
            }
        },
        "/try/assets/{name}": {
            "get": {
                "summary": f"The try-it page's script and style ({', '.join(ASSETS)})",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": _STRING}],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {mimetype: {"schema": _STRING} for mimetype in ASSETS.values()},
                    },
                    **_errors(*_COMMON),
                },
            }
        },
        "/try/info": {
            "get": {
                "summary": "For the try-it page: device and precision in use, loadable models, embedding cache",
                "responses": {**_ok("TryInfo", "what this deployment runs and could load"), **_errors(*_COMMON)},
            }
        },
        "/try/automatic-masks": {
            "post": {
                "summary": "For the try-it page: automatic masks on one image, with bounded options, as LS regions",
                "requestBody": _json_body("TryAutomaticMasksRequest"),
                "responses": {
                    **_ok("Prediction", "the masks as brush or polygon regions"),
                    **_errors("400", "403", "413", "415", "422", "424", "503", *_COMMON),
                },
            }
        },
        "/auto-annotate/{run_id}": {
            "get": {
                "summary": "Progress of a run: counts, state, and every failed task with its reason",
                "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {**_ok("AutoAnnotateStatus", "the run's state"), **_errors("503", *_COMMON)},
            }
        },
    },
}


def openapi_spec() -> dict[str, Any]:
    """A fresh copy of the description (callers may add `servers` without touching the original)."""
    return copy.deepcopy(OPENAPI)
