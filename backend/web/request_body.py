"""The request body as a JSON object, with the checks every JSON route needs.

Every string in a body that passes `json_object` can be encoded as UTF-8 (so it can be
logged, hashed, put in a URL or echoed in an error); numbers are bounded where they are
read, by `backend.validation.number`.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from backend.errors import BadRequest

# Only an escape from \ud800 to \udfff can decode to half a surrogate pair. The regex (a literal
# prefix scan: ~1 us for a click, 0.3-1.5 ms per MB) is the whole cost for nearly every body;
# those that match (emoji sent as valid pairs) are also written once by orjson, and only
# a body orjson refuses is walked, to name the string at fault.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_FIX = "send Content-Type: application/json with an object, encoded as UTF-8"


def json_object() -> dict:
    """The body as a JSON object (LS always sends one); anything else is a 400, too big a 413."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    # A chunked body has no Content-Length: Werkzeug stops reading at the limit without
    # complaint, so a body that filled the limit was cut short, not small enough.
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    try:
        # Strict UTF-8 first: json.loads(bytes) would decode raw surrogate bytes (ED A0 80)
        # with "surrogatepass" and guess UTF-16/32 from NUL bytes.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"the request body is not a JSON object in UTF-8 (invalid byte at offset {exc.start})", _JSON_FIX
        ) from None
    try:
        body = current_app.json.loads(text)
    except (ValueError, RecursionError):  # malformed, ints over 4300 digits, "[[[[..." too deep
        body = None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object", _JSON_FIX)
    if _SURROGATE_ESCAPE.search(text) and not _encodable(body):
        _refuse_lone_surrogates(body)
    return body


def _encodable(body: dict) -> bool:
    """True when orjson (C, ~1 ms per MB) can write the body, so it holds no lone surrogate.

    False also for what orjson refuses besides (ints beyond 64 bits, nesting past 254):
    then the exact walk decides.
    """
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError:
        return False
    return True


def _refuse_lone_surrogates(body: dict) -> None:
    """400 naming the first string (key or value) that holds half a surrogate pair.

    Iterative, because the parser accepts nesting deeper than a recursive walk could follow.
    """
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                if _SURROGATE.search(key):
                    _surrogate_error(path or "the body", "a key")
                stack.append((child, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
        elif isinstance(value, str) and _SURROGATE.search(value):
            _surrogate_error(path, "a string")


def _surrogate_error(path: str, what: str) -> None:
    shown = path.encode("ascii", "backslashreplace").decode("ascii")[:200]  # names may hold any character
    raise BadRequest(
        f"{what} at {shown} holds a lone UTF-16 surrogate (\\ud800-\\udfff) that is not valid Unicode",
        "send text as valid Unicode: escape characters outside the BMP as surrogate pairs",
    )
