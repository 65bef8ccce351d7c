"""Non-ASCII basic-auth credentials as Label Studio sends them (latin-1) and as curl does (UTF-8).

LS 1.23 (label_studio/ml/api_connector.py) passes BASIC_AUTH user and password to requests'
HTTPBasicAuth, which encodes them as latin-1; the backend compared UTF-8 bytes, so LS could
never authenticate with a password such as "pässwörd".
"""

from __future__ import annotations

import base64

import pytest
import requests
from requests.auth import HTTPBasicAuth

from backend.errors import Unauthorized
from backend.web.auth import check_basic_auth

USER, PASSWORD = "аннотатор", "pässwörd"  # a Cyrillic user has no latin-1 form


def as_requests_sends(user: str, password: str) -> str:
    """The Authorization header requests (so LS) sends for these credentials."""
    return (
        requests.Request("GET", "http://127.0.0.1/", auth=HTTPBasicAuth(user, password))
        .prepare()
        .headers["Authorization"]
    )


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def test_label_studios_latin1_password_is_accepted():
    check_basic_auth(as_requests_sends("ls", PASSWORD), "ls", PASSWORD)
    assert as_requests_sends("ls", PASSWORD) == basic(b"ls", PASSWORD.encode("latin-1"))


def test_utf8_credentials_are_accepted_too():
    check_basic_auth(basic(USER.encode(), PASSWORD.encode()), USER, PASSWORD)
    check_basic_auth(basic(USER.encode(), PASSWORD.encode("latin-1")), USER, PASSWORD)


@pytest.mark.parametrize(
    "header",
    [
        basic(b"ls", "passwörd".encode("latin-1")),
        basic(b"ls", "pässwörd!".encode()),
        basic(b"ls", PASSWORD.encode("utf-16-le")),
        basic("ls".encode("utf-16-le"), PASSWORD.encode("latin-1")),
        basic(b"ls", b""),
        None,
    ],
)
def test_other_bytes_are_still_refused(header):
    with pytest.raises(Unauthorized):
        check_basic_auth(header, "ls", PASSWORD)
