"""Flask's JSON responses written by orjson.

A brush region of a detailed mask is a list of ~10^5 small ints; the standard library's
encoder takes 20-35 ms to write one at 1500x1000, more than the decoder itself, orjson
about 1 ms. Request bodies are still parsed by the standard library, which keeps its
error messages and its NaN handling (rejected later, with a clear 4xx, by validation).
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=_OPTIONS).decode()

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = orjson.dumps(self._prepare_response_obj(args, kwargs), default=self.default, option=_OPTIONS)
        return self._app.response_class(body, mimetype=self.mimetype)
