"""Responses written by orjson parse to exactly what the standard library would write."""

from __future__ import annotations

import datetime
import json

import numpy as np
from flask import Flask, jsonify

from backend.web.json_provider import OrjsonProvider


def _app() -> Flask:
    app = Flask("t")
    app.json = OrjsonProvider(app)
    return app


def test_response_matches_the_standard_encoder() -> None:
    rle = list(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    body = {
        "results": [
            {
                "result": [{"value": {"format": "rle", "rle": rle, "brushlabels": ["Cat é"]}}],
                "score": 0.8125,
                "model_version": "sam-vit_b",
            }
        ],
        "empty": [],
        "none": None,
    }
    with _app().app_context():
        response = jsonify(body)
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == json.loads(json.dumps(body))


def test_numpy_and_flask_extras_serialise() -> None:
    with _app().app_context():
        text = _app().json.dumps(
            {"a": np.arange(3, dtype=np.int64), "b": np.float32(0.5), "d": datetime.date(2026, 11, 21), 3: "int key"}
        )
    assert json.loads(text) == {"a": [0, 1, 2], "b": 0.5, "d": "2026-11-21", "3": "int key"}
