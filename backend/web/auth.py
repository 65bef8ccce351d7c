"""Optional HTTP basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS), as LS's ML backend settings send it."""

from __future__ import annotations

import base64
import binascii
import hmac

from backend.errors import Unauthorized


def basic_credentials(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) bytes from an `Authorization: Basic ...` header; None for anything else.

    Parsed here rather than by Werkzeug's `request.authorization`, which raises on headers
    such as a raw latin-1 byte after "Basic " (a 500 for any route, before auth is checked).
    Bytes, not text: the comparison needs no decoding, so no charset can make it fail.
    """
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip().encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _encodings(text: str) -> list[bytes]:
    """The bytes a client may send for `text`: UTF-8 (curl, browsers) and latin-1.

    Label Studio sends basic auth through requests' HTTPBasicAuth, which encodes user and
    password as latin-1, so a non-ASCII password from LS arrives as latin-1 bytes; text beyond
    latin-1 cannot be sent that way and has only its UTF-8 form.
    """
    forms = [text.encode()]
    try:
        forms.append(text.encode("latin-1"))
    except UnicodeEncodeError:
        pass
    return forms


def _matches(given: bytes, text: str) -> bool:
    """Constant-time: every encoding is compared, whichever matched."""
    results = [hmac.compare_digest(given, form) for form in _encodings(text)]  # no short cut
    return any(results)


def check_basic_auth(header: str | None, user: str, password: str) -> None:
    """Raise Unauthorized unless the request's basic credentials match (constant-time compare).

    `header` is the raw Authorization header (None when absent). Both fields are always
    compared so the time taken does not reveal which one was wrong.
    """
    if not user and not password:
        return
    given = basic_credentials(header)
    given_user, given_pass = given or (b"", b"")
    user_ok = _matches(given_user, user)
    pass_ok = _matches(given_pass, password)
    if given is None or not (user_ok and pass_ok):
        raise Unauthorized(
            "missing or wrong basic auth credentials",
            "set the same user and password in the LS model settings (Basic auth)",
        )
