"""Where Label Studio is and which token goes there: the environment, or what /setup said.

Who may send what where:
- LABEL_STUDIO_API_KEY, a configured secret, is only ever sent to LABEL_STUDIO_URL, the
  configured address. It never goes to a `hostname` that arrived in a request.
- /setup is unauthenticated unless BASIC_AUTH_* is set, so its `hostname` is used only when
  LABEL_STUDIO_URL is unset, and only with the `access_token` that came in the same /setup
  (LS 1.23 always sends both: its HOSTNAME and the project creator's legacy token). A
  hostname without a token is refused (400): a caller can point the backend at a host only
  with credentials the caller itself supplied, never with ours.
- With LABEL_STUDIO_URL set and no key, the /setup token is sent to LABEL_STUDIO_URL. A /setup
  without a token then has nothing to add, and never replaces the token an earlier /setup gave
  (else any caller could make later clicks go out without credentials).
- A /setup hostname may be a private or loopback address (LS on a docker network, localhost),
  but is never connected to on a link-local, multicast, unspecified or metadata address
  (backend.net.netguard, checked at connect time); /health warns while anyone can send /setup.

/setup reaches one gunicorn worker. The other workers, and the RQ workers that fetch images
for auto-annotate runs, learn what it said from Redis (QUEUE_REDIS_URL, else REDIS_URL): one
small JSON value `{"hostname", "access_token"}` under a per-deployment key (never pickle),
with a TTL that every /setup renews. LS sends /setup when the model is connected, when a task
without predictions is opened (every task, as warm-up answers store none) and when predictions
are retrieved, so a day without one means nobody is labelling. The token
in that value is an LS user's secret: anyone who can read that Redis can read it. Without
Redis each process knows only what its own /setup said, so with WORKERS > 1 LABEL_STUDIO_URL
is required (/health warns).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from backend.cache.redis_link import RedisLink
from backend.errors import BackendError, BadRequest
from backend.net.urls import parse_http_url

log = logging.getLogger(__name__)

SETUP_TTL_S = 24 * 3600  # renewed by every /setup
REFRESH_S = 1.0  # a process that knows an address re-reads the shared one at most this often
MAX_URL_CHARS = 2048
MAX_TOKEN_CHARS = 4096
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]*")  # visible ASCII: it becomes an HTTP header value
_SETUP_FIX = "send the Label Studio address as hostname, e.g. http://label-studio:8080, with its access_token"


@dataclass(frozen=True)
class SetupInfo:
    """What one /setup said: LS's base URL (no trailing slash) and the token that came with it."""

    hostname: str
    access_token: str


def _ls_base_url(value: Any, what: str) -> str:
    """`value` as an LS base URL, normalised, or a 400: backend.net.urls' strict http(s) parse (a host,
    a port in 1-65535, no user info, control characters or backslashes), and no query or fragment."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, got {type(value).__name__}", _SETUP_FIX)
    too_long = BadRequest(f"{what} is longer than {MAX_URL_CHARS} characters", _SETUP_FIX)
    if len(value) > MAX_URL_CHARS:  # before parsing: no work on huge input
        raise too_long
    url = parse_http_url(value, what)  # UrlError: a 400 naming what is wrong
    if "?" in url.target or "#" in value:
        raise BadRequest(f"{what} '{url.shown}' must not hold a query or a fragment", _SETUP_FIX)
    base = url.url.rstrip("/")
    if len(base) > MAX_URL_CHARS:  # normalising can triple it ('%' -> '%25'); this is what is stored
        raise too_long
    return base


def parse_setup(body: dict, token_required: bool) -> SetupInfo | None:
    """The validated hostname and access_token of a /setup body; None when it names no hostname.

    `token_required`: LABEL_STUDIO_URL is unset, so a hostname is only usable with its own token.
    """
    hostname, token = body.get("hostname"), body.get("access_token")
    if token is None:
        token = ""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
        raise BadRequest(
            f"access_token must be a string of at most {MAX_TOKEN_CHARS} visible ASCII characters",
            "send the Label Studio token as it is (LS sends the project creator's legacy token)",
        )
    if hostname is None or hostname == "":
        return None
    hostname = _ls_base_url(hostname, "hostname")
    if token_required and not token:
        raise BadRequest(
            "/setup sent a hostname without an access_token, and LABEL_STUDIO_URL is not set: LABEL_STUDIO_API_KEY "
            "is only ever sent to LABEL_STUDIO_URL, so this hostname would have no credentials",
            "set LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY) for the backend, or send the access_token with the hostname",
        )
    return SetupInfo(hostname, token)


class SetupStore:
    """What the latest /setup said, known to every process that shares the Redis at `redis_url`."""

    def __init__(self, redis_url: str, key: str):
        self._link = RedisLink(redis_url, name="ls-setup", logger=log, socket_timeout_s=1.0)
        self._key = key
        self._lock = threading.Lock()
        self._info: SetupInfo | None = None
        self._raw: bytes | None = None
        self._next_read = 0.0

    @property
    def shared(self) -> bool:
        """True when other processes can learn what this one was told (Redis configured and up)."""
        return self._link.configured and not self._link.down

    @property
    def configured(self) -> bool:
        return self._link.configured

    def learn(self, info: SetupInfo) -> None:
        """Remember `info` here and publish it for the other processes (best effort).

        Without a token (allowed only while LABEL_STUDIO_URL is set, which makes the hostname
        unused) there is nothing to learn: an empty token must never replace one."""
        if not info.access_token:
            return
        raw = json.dumps({"hostname": info.hostname, "access_token": info.access_token}).encode()
        with self._lock:
            self._info, self._raw = info, raw
        self._link.call(lambda r: r.set(self._key, raw, ex=SETUP_TTL_S), None)

    def current(self) -> SetupInfo | None:
        """The latest /setup any process was sent; this process's own when Redis has none or is down."""
        now = time.monotonic()
        with self._lock:
            if not self._link.configured or (self._info is not None and now < self._next_read):
                return self._info
            self._next_read = now + REFRESH_S
        raw = self._link.call(lambda r: r.get(self._key), None)
        with self._lock:
            if raw is not None and raw != self._raw:
                self._raw = raw  # a malformed value is logged once, not on every read
                self._info = _decode(raw) or self._info
            return self._info


def _decode(raw: bytes) -> SetupInfo | None:
    """A stored value, validated like a /setup body; anything else is ignored (and logged)."""
    try:
        body = json.loads(raw)
        info = parse_setup(body, token_required=False) if isinstance(body, dict) else None
    except (ValueError, RecursionError, BackendError):  # deep nesting: RecursionError; UrlError is a BackendError
        info = None
    if info is None:
        log.warning("ignoring a malformed shared /setup value in Redis (%d bytes)", len(raw))
    return info


def address_warnings(label_studio_url: str, api_key: str, workers: int, redis_url: str, basic_auth: bool) -> list[str]:
    """Configurations that run but will fail some clicks, ignore a setting, or let anyone steer
    image fetches; /health lists them."""
    warnings = []
    if not label_studio_url and not basic_auth:
        warnings.append(
            "LABEL_STUDIO_URL is not set and basic auth is off: any client that can reach this backend can send "
            "/setup and point LS-path image fetches (with a token of its own) at hosts on Label Studio's network, "
            "private and loopback addresses included (never link-local or metadata addresses). Set "
            "LABEL_STUDIO_URL (and LABEL_STUDIO_API_KEY), or BASIC_AUTH_USER and BASIC_AUTH_PASS"
        )
    if not label_studio_url and workers > 1 and not redis_url:
        warnings.append(
            f"LABEL_STUDIO_URL is required with WORKERS={workers} and no Redis: LS sends /setup (its address and "
            "token) to one worker only, and the others answer clicks on LS-hosted images with 424. Set "
            "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or REDIS_URL / QUEUE_REDIS_URL so workers share it"
        )
    if api_key and not label_studio_url:
        warnings.append(
            "LABEL_STUDIO_API_KEY is set but LABEL_STUDIO_URL is not: the key is only ever sent to LABEL_STUDIO_URL, "
            "so it is unused and images are fetched with the access_token LS sends in /setup"
        )
    return warnings
