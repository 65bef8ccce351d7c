"""The try-it page: one small self-contained page (no CDN, no build step) where an operator opens
an image, clicks, and sees what this deployment answers, through /predict exactly as Label
Studio calls it.

Browsers get it at GET / (they ask for text/html first; Label Studio, curl and requests keep
/'s health JSON, see `wants_page`) and at GET /try; its files are backend/web/static/tryit.
Two JSON routes exist for the page alone:
- GET /try/info: what runs (device and precision as loaded), the models this deployment could
  load, and the embedding cache's size and hits;
- POST /try/automatic-masks: automatic masks on one image (a data: URI or an http(s) URL,
  fetched under the usual rules), validated by the auto-annotate options' table under tighter
  bounds, answered as LS regions.
Basic auth covers all of it, as every route (backend.web.app).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, send_file
from werkzeug.datastructures import MIMEAccept

from backend.autoannotate.annotator import OPTIONS, AutoAnnotateOptions, AutoAnnotator, Option, parse_options
from backend.engines.engine import CHECKPOINT_DIR, ServingEngine
from backend.errors import BadRequest, NotFound
from backend.interactive.model import SamBackend
from backend.labelstudio.label_config import OutputTarget
from backend.settings import Settings
from backend.web.request_body import json_object
from sam_model import FAMILIES, OFFICIAL_CHECKPOINTS, family_of

STATIC = Path(__file__).resolve().parent / "static" / "tryit"
ASSETS = {"tryit.js": "text/javascript", "tryit.css": "text/css"}
# The page loads nothing from elsewhere; images may come from any http(s) host the user names.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob: http: https:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

# What the page may ask of the automatic mask generator: the auto-annotate options (their table
# validates), with ceilings that keep one request to seconds of work on a CPU; crops (one more
# encode each) are not offered, and regions are brush masks or polygons, as a click's.
_CEILINGS = {"points_per_side": 32, "points_per_batch": 256, "max_masks": 200}
_OFFERED = (
    "max_masks",
    "min_area",
    "amg_mode",
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "box_nms_thresh",
    "min_mask_region_area",
)
TRY_OPTIONS: dict[str, Option] = {
    "output": replace(OPTIONS["output"], choices=("brush", "polygon"), nullable=False),
    **{
        name: replace(OPTIONS[name], high=min(OPTIONS[name].high, _CEILINGS.get(name, OPTIONS[name].high)))
        for name in _OFFERED
    },
}
TRY_DEFAULTS = {"output": "brush"}  # the others: the auto-annotate defaults (annotator.option_defaults)
IMAGE_SCHEMES = ("data", "http", "https")
# The regions' names in the answer: one image, one mask control, one label.
_TARGET = {"from_name": "mask", "to_name": "image", "label": "Object"}


def wants_page(accept: MIMEAccept) -> bool:
    """True for a browser (text/html preferred); */*, JSON or no Accept header keep the JSON."""
    return accept.best_match(("application/json", "text/html")) == "text/html"


def page() -> Response:
    """The page itself; `Vary: Accept` because GET / answers JSON or HTML by that header."""
    response = send_file(STATIC / "index.html", mimetype="text/html", max_age=0)
    response.headers.update({**PAGE_HEADERS, "Vary": "Accept"})
    return response


def tryit_blueprint(settings: Settings, backend: SamBackend) -> Blueprint:
    routes = Blueprint("tryit", __name__)

    @routes.get("/try")
    def try_page() -> Response:
        return page()

    @routes.get("/try/assets/<name>")
    def asset(name: str) -> Response:
        mimetype = ASSETS.get(name)
        if mimetype is None:
            raise NotFound(f"no asset {name[:64]!r}", f"the page's assets are {', '.join(ASSETS)}")
        response = send_file(STATIC / name, mimetype=mimetype, max_age=0)
        response.headers.update(PAGE_HEADERS)
        return response

    @routes.get("/try/info")
    def info() -> Response:
        engine = backend.engine
        return jsonify(
            model_id=engine.model_id,
            model_loaded=engine.loaded,
            **running_on(engine),
            models=loadable_models(engine.spec.info),
            embedding_cache=cache_info(settings, backend),
            max_request_bytes=settings.max_request_bytes,
            automatic_masks=option_bounds(),
        )

    @routes.post("/try/automatic-masks")
    def automatic_masks() -> Response:
        body = json_object()
        image = image_value(body.get("image"))
        options = try_options(body.get("options"))
        target = OutputTarget(output_type=options.output, **_TARGET)  # never None: try_options defaults it
        started = time.perf_counter()
        with backend.cold_slots.enter():  # like any request thread's work on an uncached image
            prediction = AutoAnnotator(backend).annotate(
                {"id": "try-it", "data": {"image": image}}, target, "image", options
            )
        response = jsonify(prediction)
        response.headers["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response

    return routes


def image_value(value: Any) -> str:
    """The image to segment: a data: URI or an http(s) URL (fetched under the usual rules)."""
    scheme = value.strip().partition(":")[0].lower() if isinstance(value, str) else ""
    if scheme not in IMAGE_SCHEMES:
        raise BadRequest(
            "'image' must be a data: URI or an http(s) URL",
            'send {"image": "data:image/png;base64,..."} or {"image": "https://host/picture.jpg"}',
        )
    return value.strip()


def try_options(raw: Any) -> AutoAnnotateOptions:
    """The page's AMG options: only TRY_OPTIONS, within their bounds, then the usual validation."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise BadRequest("'options' must be a JSON object", 'send e.g. {"points_per_side": 16, "max_masks": 50}')
    unknown = set(raw) - set(TRY_OPTIONS)
    if unknown:
        raise BadRequest(
            f"option(s) not offered here: {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(TRY_OPTIONS))}"
        )
    parsed = {name: TRY_OPTIONS[name].parse(name, value) for name, value in raw.items()}
    return parse_options({**TRY_DEFAULTS, **parsed})


def option_bounds() -> dict[str, dict[str, Any]]:
    """What the page's form may send: each offered option's bounds or choices."""
    return {
        name: {"choices": list(option.choices)} if option.kind is str else {"min": option.low, "max": option.high}
        for name, option in TRY_OPTIONS.items()
    }


def running_on(engine: ServingEngine) -> dict[str, str | None]:
    """Device and precision as loaded ("auto" resolved); null until the model is loaded.

    SAM predictors carry both; GrabCut runs on the CPU in no torch precision.
    """
    if not engine.loaded:
        return {"device": None, "precision": None}
    served = engine.load()
    device = getattr(served, "device", None)
    return {"device": str(device) if device is not None else "cpu", "precision": getattr(served, "precision", None)}


def loadable_models(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every official model type, whether its checkpoint is in checkpoints/, and the one in use
    (listed too when it is not official: a test configuration or a SAM_CHECKPOINT elsewhere)."""
    in_use = info.get("model")
    rows = [
        {
            "model": model_type,
            "family": family.label,
            "checkpoint": OFFICIAL_CHECKPOINTS[model_type].filename,
            "available": model_type == in_use or (CHECKPOINT_DIR / OFFICIAL_CHECKPOINTS[model_type].filename).is_file(),
            "in_use": model_type == in_use,
        }
        for family in FAMILIES
        for model_type in family.model_types
        if model_type in OFFICIAL_CHECKPOINTS
    ]
    if in_use and not any(row["in_use"] for row in rows):
        label = family_of(in_use).label
        rows.append(
            {"model": in_use, "family": label, "checkpoint": info.get("checkpoint"), "available": True, "in_use": True}
        )
    return rows


def cache_info(settings: Settings, backend: SamBackend) -> dict[str, Any]:
    """The embedding cache's capacity, what this process holds, and its lookups by level (the /metrics counter)."""
    lookups = {"local": 0, "redis": 0, "computed": 0}
    for family in backend.metrics.cache.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("level") in lookups:
                lookups[sample.labels["level"]] += int(sample.value)
    entries, held = backend.cache.local_usage()
    return {
        "capacity_mb": settings.embedding_cache_mb,
        "entries": entries,
        "held_mb": round(held / 2**20, 1),
        "redis": bool(settings.redis_url),
        "lookups": lookups,
    }
