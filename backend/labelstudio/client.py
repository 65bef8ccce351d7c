"""A small Label Studio API client: the only code that holds and sends LS credentials.

Credentials go to the LS host only: the LS URL is parsed strictly once (backend.net.urls), and a
request carries them only when its own strictly parsed URL has the same (scheme, host, port);
the string sent is rebuilt from those parts, so the check and the connection cannot disagree.
Redirects are off in requests and followed by backend.net.transport.follow_redirects: LS-internal
ones with credentials; one to another host is handed back to the caller, never followed with our
Authorization header attached.

Image fetches send credentials to fewer places still: only LS *media* paths (`is_media_url`), the
forms LS 1.23 puts in task data: `/data/upload/`, `/data/local-files/`, `/storage-data/`, and
`/tasks/<id>/resolve/` (what LS writes for cloud URIs when it resolves them) or its older name
`/tasks/<id>/presign/` (what `presign_url` builds). A task value naming `/api/...` must not make
the backend call LS's API with the key.

A base URL that came from /setup (`from_setup`) was named by whoever can reach the backend, so its
connections go through backend.net.netguard's /setup rule (no link-local, multicast, unspecified
or metadata addresses, checked at connect time).

Tokens (Label Studio 1.23):
- a legacy API token (40 hex chars, Account & Settings -> Legacy Token) is sent as
  `Authorization: Token <key>`;
- a personal access token is a JWT *refresh* token (payload `token_type: "refresh"`); it is
  exchanged at POST /api/token/refresh/ {"refresh": key} -> {"access": jwt}, and the access JWT
  is sent as `Authorization: Bearer <access>`, refreshed shortly before its `exp` and once on 401;
- any other JWT (an access token) is sent as `Bearer` as is.
The `access_token` that LS sends in /setup (ls-samples/setup_request.json) is the connecting
user's legacy token (40 chars, not a JWT); it is used when LABEL_STUDIO_API_KEY is not set.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import requests

from backend.errors import BackendError
from backend.net.netguard import AddressPolicy, guarded_session
from backend.net.transport import DeadlineAdapter, bare_session, follow_redirects
from backend.net.urls import HttpUrl, UrlError, has_scheme, parse_http_url

log = logging.getLogger(__name__)

_REFRESH_SKEW_S = 30.0
MEDIA_PREFIXES = ("/data/upload/", "/data/local-files/", "/storage-data/")
_STORAGE_RESOLVE = re.compile(r"/tasks/[0-9]+/(?:resolve|presign)/")
AUTH_FIX = (
    "Set LABEL_STUDIO_API_KEY to a valid token of a user with access to the project "
    "(Label Studio -> Account & Settings: a Personal Access Token, or a Legacy Token). "
    "Each kind works only while the organization's API token settings (Organization page) "
    "enable it; a personal access token must also be unexpired and not revoked."
)


class LabelStudioError(BackendError):
    """Label Studio failed or answered unexpectedly: an upstream failure (424)."""

    status, code = 424, "label_studio_error"
    retryable = True


class LabelStudioAuthError(LabelStudioError):
    """Label Studio rejected (or was never given) our credentials: retrying cannot help."""

    code = "label_studio_unauthorized"
    retryable = False


def jwt_claims(token: str) -> dict | None:
    """The unverified payload of a JWT-shaped token (three base64url parts), else None."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


class LabelStudioClient:
    """Talks to one Label Studio instance; thread-safe; pooled connections; never logs tokens."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        access_token: str = "",
        timeout: float = 30.0,
        from_setup: bool = False,
    ):
        try:
            self.base = parse_http_url(base_url.strip().rstrip("/"), "the Label Studio URL")
        except UrlError as exc:
            raise BackendError(
                exc.message,
                "Set LABEL_STUDIO_URL to the address this backend reaches Label Studio at, "
                "e.g. http://label-studio:8080",
                code="bad_label_studio_url",
            ) from None
        if "?" in self.base.target:
            raise BackendError(
                f"the Label Studio URL {self.base.shown} has a query",
                "Give Label Studio's base URL only",
                code="bad_label_studio_url",
            )
        self.base_url = self.base.url.rstrip("/")  # for messages and joining paths
        self.timeout = timeout
        self._key = api_key.strip() or access_token.strip()
        claims = jwt_claims(self._key) if self._key else None
        self._pat = claims is not None and claims.get("token_type") == "refresh"
        self._pat_exp = float(claims.get("exp", 0) or 0) if self._pat else 0.0
        self._bearer = claims is not None and not self._pat
        self._access = ""
        self._access_exp = 0.0
        self._lock = threading.Lock()
        self.from_setup = from_setup
        if from_setup:
            _, host, port = self.base.origin
            self.session = guarded_session(AddressPolicy(False, (host, port), ls_from_setup=True))
        else:
            self.session = bare_session(DeadlineAdapter(pool_connections=4, pool_maxsize=16))

    # ---- addressing -------------------------------------------------------------------------

    def is_ls_url(self, url: HttpUrl) -> bool:
        """True when `url` is on the LS host (same scheme, host and port), where credentials may go."""
        return url.origin == self.base.origin

    def _relative_path(self, url: HttpUrl) -> str | None:
        """`url`'s path below the LS base path, percent-decoded, or None when it is not on LS under
        that path. Decoded because LS (Django) routes on the decoded path."""
        base = self.base.path.rstrip("/")
        if not self.is_ls_url(url) or not url.path.startswith(base + "/"):
            return None
        return unquote(url.path[len(base) :])

    def is_media_url(self, url: HttpUrl) -> bool:
        """True when `url` is an LS media path (module doc), the only LS paths an image fetch sends
        credentials to. A '.' or '..' segment (escaped or not) is never one: a proxy in front of LS
        may resolve it and land on the API."""
        path = self._relative_path(url)
        if path is None or any(part in (".", "..") for part in path.replace("\\", "/").split("/")):
            return False
        return path.startswith(MEDIA_PREFIXES) or bool(_STORAGE_RESOLVE.fullmatch(path))

    def is_login_url(self, url: HttpUrl) -> bool:
        """True for LS's login page, where LS redirects a request whose token it refused."""
        path = self._relative_path(url)
        return path is not None and path.startswith("/user/login")

    def target(self, path_or_url: str | HttpUrl) -> HttpUrl:
        """The URL on the LS host for a path or URL; refuses anything else so credentials cannot leak."""
        if isinstance(path_or_url, str) and not has_scheme(path_or_url):  # a path (even "//host/x") stays here
            return parse_http_url(self.base_url + "/" + path_or_url.lstrip("/"), "the Label Studio path")
        url = path_or_url if isinstance(path_or_url, HttpUrl) else parse_http_url(path_or_url)
        if not self.is_ls_url(url):
            raise ValueError("LabelStudioClient only talks to the Label Studio host")
        return url

    # ---- auth -------------------------------------------------------------------------------

    def _auth_header(self, force_refresh: bool = False) -> dict[str, str]:
        if not self._key:
            return {}
        if not self._pat:
            return {"Authorization": ("Bearer " if self._bearer else "Token ") + self._key}
        with self._lock:
            if force_refresh or not self._access or time.time() > self._access_exp - _REFRESH_SKEW_S:
                self._refresh()
            return {"Authorization": "Bearer " + self._access}

    def _refresh(self) -> None:
        """Exchange the personal access token for an access JWT (caller holds the lock)."""
        url = self.target("/api/token/refresh/").url
        if self._pat_exp and time.time() > self._pat_exp:
            raise LabelStudioAuthError("the personal access token in LABEL_STUDIO_API_KEY has expired", AUTH_FIX)
        try:
            resp = self.session.post(url, json={"refresh": self._key}, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise self._unreachable("POST", url, exc) from None
        if resp.status_code in (400, 401, 403):
            raise LabelStudioAuthError(
                f"Label Studio refused the personal access token at POST {url} (HTTP {resp.status_code})", AUTH_FIX
            )
        if resp.status_code == 404:
            raise LabelStudioAuthError(
                f"Label Studio has no token refresh endpoint (HTTP 404 from POST {url})",
                "This Label Studio version does not support personal access tokens: put a legacy "
                "token in LABEL_STUDIO_API_KEY",
            )
        if resp.status_code != 200:
            raise LabelStudioError(f"POST {url} answered HTTP {resp.status_code}", "Check that Label Studio is healthy")
        try:
            access = resp.json()["access"]
        except (ValueError, KeyError, TypeError):
            raise LabelStudioError(
                f"POST {url} did not return an access token", "Check the Label Studio version"
            ) from None
        claims = jwt_claims(access) or {}
        self._access = access
        # Without an exp claim, use it for a minute, then refresh.
        self._access_exp = float(claims.get("exp") or time.time() + 60)
        log.debug("refreshed Label Studio access token (expires at %s)", int(self._access_exp))

    # ---- requests ---------------------------------------------------------------------------

    def _unreachable(self, method: str, url: str, exc: Exception) -> LabelStudioError:
        """`url` as it may be shown (no secrets)."""
        kind = "timed out" if isinstance(exc, requests.Timeout) else "is unreachable"
        return LabelStudioError(
            f"Label Studio {kind}: {method} {url} ({type(exc).__name__})",
            "Check LABEL_STUDIO_URL (or the hostname LS sends in /setup): it must be reachable from "
            "this backend, e.g. http://label-studio:8080 inside docker compose, not localhost",
        )

    def send(self, method: str, url: HttpUrl, **kw: Any) -> requests.Response:
        """One authenticated request to the LS host, redirects not followed.

        Retries once with a fresh access token on 401 (personal access tokens). A remaining
        401/403, or being sent to the LS login page (where LS redirects a refused token), raises
        LabelStudioAuthError. Other statuses are returned as they are: callers decide what a 404 means.
        """
        url = self.target(url)
        if self.is_login_url(url):
            raise LabelStudioAuthError(
                f"Label Studio redirected {method} to its login page ({url.shown}): the token was not accepted",
                AUTH_FIX,
            )
        kw.setdefault("timeout", self.timeout)
        kw["allow_redirects"] = False
        try:
            resp = self.session.request(method, url.url, headers=self._auth_header(), **kw)
            if resp.status_code == 401 and self._pat:
                resp.close()
                resp = self.session.request(method, url.url, headers=self._auth_header(force_refresh=True), **kw)
        except requests.RequestException as exc:
            raise self._unreachable(method, url.shown, exc) from None
        if resp.status_code in (401, 403):
            resp.close()
            hint = "" if self._key else " (no token configured)"
            raise LabelStudioAuthError(
                f"Label Studio refused {method} {url.shown} (HTTP {resp.status_code}){hint}", AUTH_FIX
            )
        return resp

    def open(self, method: str, path_or_url: str | HttpUrl, **kw: Any) -> requests.Response:
        """An authenticated request (see `send`) with LS-internal redirects followed; a redirect
        to another host is returned, not followed."""

        def send(hop_method: str, url: HttpUrl, with_credentials: bool) -> requests.Response:
            # with_credentials is always True here: leave_trusted=False stops before any other host.
            hop_kw = kw if hop_method == method else {k: v for k, v in kw.items() if k not in ("json", "data")}
            return self.send(hop_method, url, **hop_kw)

        resp, _ = follow_redirects(method, self.target(path_or_url), send, trusted=self.is_ls_url, leave_trusted=False)
        return resp

    def _checked(self, method: str, path_or_url: str, **kw: Any) -> requests.Response:
        resp = self.open(method, path_or_url, **kw)
        if resp.status_code >= 300:
            resp.close()
            status = 404 if resp.status_code == 404 else 424
            raise LabelStudioError(
                f"Label Studio answered HTTP {resp.status_code} to {method} {resp.url}",
                "Check that the task/project/prediction exists and that Label Studio is healthy",
                status=status,
                retryable=resp.status_code >= 500,
            )
        return resp

    def get(self, path_or_url: str, **kw: Any) -> requests.Response:
        """GET on the LS host; raises LabelStudioError for any non-2xx answer."""
        return self._checked("GET", path_or_url, **kw)

    def presign_url(self, task_id: int, uri: str) -> HttpUrl:
        """Where LS serves a cloud URI (s3://, gs://, azure-blob://) of a task.

        LS answers /tasks/<id>/presign/?fileuri=<urlsafe base64 of the URI, padded> with a 303 to
        the presigned URL (to fetch WITHOUT LS credentials), or, for storages with presign off,
        streams the bytes itself (200).
        """
        fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
        return self.target(f"/tasks/{int(task_id)}/presign/?fileuri={fileuri}")

    # ---- API ----------------------------------------------------------------------------------

    def get_task(self, task_id: int) -> dict:
        return self.get(f"/api/tasks/{int(task_id)}/").json()

    def list_tasks(self, project: int, page_size: int = 100) -> Iterator[dict]:
        """Every task of a project, page by page (GET /api/tasks?project=..&page=..)."""
        page = 1
        while True:
            resp = self.open(
                "GET", "/api/tasks/", params={"project": int(project), "page": page, "page_size": page_size}
            )
            if resp.status_code == 404 and page > 1:  # DRF answers 404 past the last page
                return
            if resp.status_code >= 300:
                raise LabelStudioError(
                    f"Label Studio answered HTTP {resp.status_code} listing tasks of project {project}",
                    "Check that the project exists and the token's user can see it",
                    retryable=resp.status_code >= 500,
                )
            body = resp.json()
            tasks = body.get("tasks", body.get("results", [])) if isinstance(body, dict) else body
            yield from tasks
            total = body.get("total") if isinstance(body, dict) else None
            if not tasks or len(tasks) < page_size or (total is not None and page * page_size >= total):
                return
            page += 1

    def create_prediction(self, task_id: int, result: list, score: float | None, model_version: str) -> dict:
        body = {"task": int(task_id), "result": result, "model_version": model_version}
        if score is not None:
            body["score"] = float(score)
        return self._checked("POST", "/api/predictions/", json=body).json()

    def list_predictions(self, task_id: int) -> list[dict]:
        body = self.get("/api/predictions/", params={"task": int(task_id)}).json()
        return body.get("results", []) if isinstance(body, dict) else body

    def delete_prediction(self, prediction_id: int) -> None:
        resp = self.open("DELETE", f"/api/predictions/{int(prediction_id)}/")
        resp.close()
        if resp.status_code not in (200, 204, 404):  # 404: already gone, which is what we wanted
            raise LabelStudioError(
                f"Label Studio answered HTTP {resp.status_code} deleting prediction {prediction_id}",
                "Check that the token's user may manage predictions in this project",
                retryable=resp.status_code >= 500,
            )
