"""The request body as a JSON object, with the checks every JSON route needs."""
from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from backend.errors import BadRequest


def json_object() -> dict:
    """The body as a JSON object (LS always sends one); anything else is a 400, too big a 413."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    # A chunked body has no Content-Length: Werkzeug stops reading at the limit without
    # complaint, so a body that filled the limit was cut short, not small enough.
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # "[[[[..." nested deeper than the parser goes
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", "send Content-Type: application/json with an object")
    return body
