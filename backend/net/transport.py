"""HTTP plumbing shared by the LS client and the image fetcher: download deadlines and the one
redirect loop.

Deadlines: FETCH_TIMEOUT_S bounds each socket operation, so a server that sends one byte just
inside it (in the headers or the body) could hold a request for as long as it likes. Inside
`download_deadline(seconds)` every connect and every socket read of this thread's requests gets at
most the time left, so the whole download (all redirect hops, the LS presign call, the body)
ends by the deadline: the read that would pass it fails with a timeout instead. It lives in a
context variable, so pooled connections shared between threads each obey their caller's deadline.

Redirects: requests never follows them (allow_redirects=False everywhere); `follow_redirects`
decides each hop, from strictly parsed `Location`s (backend.net.urls), and whether it may carry
credentials: only while every hop so far was trusted (the LS host).
"""

from __future__ import annotations

import contextvars
import http.client
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError

from backend.errors import BackendError
from backend.net.urls import HttpUrl, UrlError, shown_raw

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Deadline:
    end: float  # a time.monotonic() value

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0


_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("download_deadline", default=None)


@contextmanager
def download_deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every request this thread makes inside the block to `seconds` in total (an enclosing
    deadline that ends sooner still wins)."""
    deadline = Deadline(time.monotonic() + seconds)
    outer = _deadline.get()
    if outer is not None and outer.end < deadline.end:
        deadline = outer
    token = _deadline.set(deadline)
    try:
        yield deadline
    finally:
        _deadline.reset(token)


class _DeadlineReader(io.RawIOBase):
    """A response's socket reads (status line, headers, body), each given at most the time left."""

    def __init__(self, sock: Any):
        self._sock = sock
        # A real socket file: it holds a reference, so the socket stays open when http.client hands
        # the connection over to the response ("Connection: close"), as with its own reader.
        self._raw = sock.makefile("rb", buffering=0)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        deadline = _deadline.get()
        if deadline is None:
            return self._raw.readinto(buffer)
        left = deadline.remaining()
        if left <= 0:
            raise TimeoutError("the download deadline has passed")
        per_read = self._sock.gettimeout()
        self._sock.settimeout(left if per_read is None else min(per_read, left))
        try:
            return self._raw.readinto(buffer)
        finally:
            self._sock.settimeout(per_read)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: Any, *args: Any, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # http.client's own reader, replaced before anything was read through it
        self.fp = io.BufferedReader(_DeadlineReader(sock))


class _DeadlineConnect:
    """Connection mixin: reads obey the deadline, and a connect attempt waits at most the time left."""

    response_class = _DeadlineResponse

    def _new_conn(self) -> Any:
        deadline = _deadline.get()
        if deadline is not None:
            left = deadline.remaining()
            if left <= 0:
                raise ConnectTimeoutError(self, "not connecting: the download deadline has passed")
            if not isinstance(self.timeout, (int, float)) or self.timeout > left:
                self.timeout = left
        return super()._new_conn()  # type: ignore[misc]


class DeadlineHTTPConnection(_DeadlineConnect, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_DeadlineConnect, HTTPSConnection):
    pass


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose pools open `connection_classes` (deadline-aware by default)."""

    connection_classes: ClassVar[dict[str, type]] = {"http": DeadlineHTTPConnection, "https": DeadlineHTTPSConnection}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("DeadlineHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": self.connection_classes["http"]}),
            "https": type(
                "DeadlineHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": self.connection_classes["https"]}
            ),
        }


class _NoRedirectSession(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> None:
        """Never a redirect for requests itself: even with allow_redirects=False it parses the
        Location (with urllib's parser, which raises ValueError on some); follow_redirects decides."""


def bare_session(adapter: HTTPAdapter) -> requests.Session:
    """A session that uses `adapter`, leaves redirects to follow_redirects, and takes no ambient
    credentials (.netrc would replace our Authorization header) or proxies from the environment."""
    session = _NoRedirectSession()
    session.trust_env = False
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class RedirectError(BackendError):
    """A redirect this backend will not follow: a bad or non-http(s) Location, or too many hops."""

    status, code = 424, "bad_redirect"


def header_text(value: str | None) -> str | None:
    """A header value as its sender meant it: http.client decodes header bytes as latin-1, so a raw
    UTF-8 `Location: /é` arrives as '/Ã©' and would be fetched as /%C3%83%C2%A9. Bytes that decode
    as UTF-8 are read as UTF-8 (what servers and browsers send and expect); anything else stays
    as it came, for the strict URL parser to judge."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not latin-1-encodable (never from http.client), or not UTF-8
        return value


def follow_redirects(
    method: str,
    url: HttpUrl,
    send: Callable[[str, HttpUrl, bool], requests.Response],
    *,
    trusted: Callable[[HttpUrl], bool],
    leave_trusted: bool,
) -> tuple[requests.Response, HttpUrl]:
    """The one redirect loop: (the final response, its URL).

    `send(method, url, with_credentials)` makes one request without following redirects. A hop is
    sent with credentials only while it and every hop before it were `trusted`. A redirect that
    leaves the trusted hosts is followed without credentials when `leave_trusted`, else returned
    to the caller (LS API calls; the presign endpoint's 303 to the storage). A 303 turns the
    request into a GET.
    """
    with_credentials = True
    for _ in range(MAX_REDIRECTS + 1):
        with_credentials = with_credentials and trusted(url)
        resp = send(method, url, with_credentials)
        location = header_text(resp.headers.get("Location"))
        if resp.status_code not in REDIRECT_STATUSES or location is None:
            return resp, url
        try:
            target = url.join(location)
        except UrlError as exc:
            resp.close()
            raise RedirectError(
                f"{url.shown} redirected to '{shown_raw(location)}', which is refused: {exc.reason}",
                "Fix the redirect on that server (or point the task at the final image URL)",
            ) from None
        if not leave_trusted and not (with_credentials and trusted(target)):
            return resp, url
        resp.close()
        if resp.status_code == 303:
            method = "GET"
        url = target
    raise RedirectError(
        f"too many redirects (more than {MAX_REDIRECTS}) from {url.shown}",
        "Point the task at the final image URL, or fix the redirect loop on that server",
    )
