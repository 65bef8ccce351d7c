"""Optional HTTP basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS), as LS's ML backend settings send it."""
from __future__ import annotations

import hmac

from backend.errors import Unauthorized


def check_basic_auth(authorization: object | None, user: str, password: str) -> None:
    """Raise Unauthorized unless the request's basic credentials match (constant-time compare).

    `authorization` is Werkzeug's parsed `request.authorization` (None when absent). Both
    fields are always compared so the time taken does not reveal which one was wrong.
    """
    if not user and not password:
        return
    given_user = getattr(authorization, "username", None) or ""
    given_pass = getattr(authorization, "password", None) or ""
    user_ok = hmac.compare_digest(given_user.encode(), user.encode())
    pass_ok = hmac.compare_digest(given_pass.encode(), password.encode())
    if getattr(authorization, "type", None) != "basic" or not (user_ok and pass_ok):
        raise Unauthorized("missing or wrong basic auth credentials",
                           "set the same user and password in the LS model settings (Basic auth)")
