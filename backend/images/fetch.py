"""Fetch an ImageRef's bytes, with a byte cap and a deadline, never sending LS credentials elsewhere.

Redirects are followed by backend.net.transport.follow_redirects (at most 5 hops), each Location
parsed strictly (backend.net.urls). A hop gets LS credentials only while the whole chain so far
stayed on LS media paths (LabelStudioClient.is_media_url); from the first other hop on, every
request goes through the address-checked session (netguard) with no credentials at all. A task
value that names another path on the LS host (its API) is refused with a 400 before any request.
A cloud URI starts the chain at LS's presign endpoint. The whole download (presign, every hop, every byte) runs under one
DOWNLOAD_DEADLINE_S deadline: past it, a 504.
"""

from __future__ import annotations

import logging
import os

import requests

from backend.errors import (
    BackendError,
    BadRequest,
    DownloadTimeout,
    ImageFetchError,
    PayloadTooLarge,
)
from backend.images.refs import ForbiddenImage, ImageRef
from backend.labelstudio.client import (
    AUTH_FIX,
    MEDIA_PREFIXES,
    LabelStudioAuthError,
    LabelStudioClient,
    LabelStudioError,
)
from backend.net.netguard import AddressPolicy, guarded_session
from backend.net.transport import download_deadline, follow_redirects
from backend.net.urls import HttpUrl

log = logging.getLogger(__name__)


class ImageFetcher:
    """Holds what fetching needs: the LS client (may be None), the local root, limits, policy."""

    def __init__(
        self,
        ls: LabelStudioClient | None = None,
        *,
        local_files_root: str = "",
        max_image_bytes: int = 100 * 1024 * 1024,
        allow_private_image_urls: bool = False,
        timeout: float = 30.0,
        deadline_s: float = 60.0,
    ):
        self.ls = ls
        self.local_files_root = local_files_root
        self.max_image_bytes = max_image_bytes
        self.timeout = timeout
        self.deadline_s = deadline_s
        ls_host = ls.base.origin[1:] if ls is not None else None
        policy = AddressPolicy(allow_private_image_urls, ls_host, ls_from_setup=ls is not None and ls.from_setup)
        self.session = guarded_session(policy)

    def fetch(self, ref: ImageRef) -> bytes:
        """The raw bytes of the image `ref` points at."""
        if ref.kind == "data":
            if len(ref.data) > self.max_image_bytes:
                raise self._too_large(ref.source)
            return ref.data
        if ref.kind == "local":
            return self._read_local(ref.path)
        with download_deadline(self.deadline_s) as deadline:
            try:
                return self._download(ref)
            except (ImageFetchError, LabelStudioError):
                if not deadline.passed:
                    raise
        # The deadline cut the download off (a read or connect failed for lack of time): say so.
        raise DownloadTimeout(
            f"downloading {ref.source} took longer than DOWNLOAD_DEADLINE_S={self.deadline_s:g} s",
            "The image host (or Label Studio) is too slow or stalls: retry, serve the image from a faster "
            "host, or raise DOWNLOAD_DEADLINE_S",
        )

    def _download(self, ref: ImageRef) -> bytes:
        if ref.kind == "cloud":
            start = self._ls(ref).presign_url(ref.task_id, ref.url)
        else:
            if ref.kind == "ls":
                self._ls(ref)
            start = ref.http  # set by resolve_image_ref for "ls" and "url" refs
            if self._on_ls(start) and not self._credentialed(start):
                raise BadRequest(
                    f"{ref.source} names {start.path!r} on the Label Studio host, which is not a media path: "
                    "the backend sends LS credentials only to LS media paths",
                    f"Point the task at an image: an LS media path ({', '.join(MEDIA_PREFIXES)}, "
                    "/tasks/<id>/resolve/), a cloud URI or another image host",
                )
        resp, url = follow_redirects("GET", start, self._send, trusted=self._credentialed, leave_trusted=True)
        if resp.status_code != 200:
            resp.close()
            raise self._status_error(ref, url, resp.status_code)
        return self._read_body(resp, url)

    def _on_ls(self, url: HttpUrl) -> bool:
        return self.ls is not None and self.ls.is_ls_url(url)

    def _credentialed(self, url: HttpUrl) -> bool:
        """Whether a hop to `url` may carry LS credentials: only to LS media paths."""
        return self.ls is not None and self.ls.is_media_url(url)

    def _ls(self, ref: ImageRef) -> LabelStudioClient:
        if self.ls is None:
            raise ImageFetchError(
                f"{ref.source} must be fetched through Label Studio, but no LS client is configured",
                "Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY",
                code="label_studio_url_missing",
            )
        return self.ls

    def _too_large(self, what: str) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"{what} is larger than MAX_IMAGE_BYTES={self.max_image_bytes}",
            "Downscale or recompress the image, or raise MAX_IMAGE_BYTES",
        )

    def _read_local(self, path: str) -> bytes:
        """Read a file resolve_image_ref confined to the root; checked again here, right before
        opening (a link swapped in since then is refused, the last component is not followed)."""
        root = os.path.realpath(self.local_files_root) if self.local_files_root else ""
        if not root or os.path.commonpath([os.path.realpath(path), root]) != root:
            raise ForbiddenImage(
                f"{path} is not under LOCAL_FILES_DOCUMENT_ROOT={self.local_files_root!r}",
                "Resolve local files with the same LOCAL_FILES_DOCUMENT_ROOT this fetcher uses",
            )
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise ImageFetchError(
                f"cannot read local file {path} ({exc.strerror})", "Check the file and its permissions"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fh.fileno()).st_size > self.max_image_bytes:
                raise self._too_large(path)
            data = fh.read(self.max_image_bytes + 1)
        if len(data) > self.max_image_bytes:  # it grew since the stat
            raise self._too_large(path)
        return data

    def _read_body(self, resp: requests.Response, url: HttpUrl) -> bytes:
        """Read a streamed body, giving up (413) as soon as it exceeds the cap; closes the response."""
        with resp:
            declared = resp.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_image_bytes:
                raise self._too_large(url.shown)
            chunks, size = [], 0
            try:
                for chunk in resp.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > self.max_image_bytes:
                        raise self._too_large(url.shown)
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise ImageFetchError(
                    f"the transfer of {url.shown} broke off ({type(exc).__name__})",
                    "Retry; if it persists, check the network between this backend and that host",
                    retryable=True,
                ) from None
        return b"".join(chunks)

    def _send(self, method: str, url: HttpUrl, with_credentials: bool) -> requests.Response:
        """One hop: with LS credentials through the LS client, else anonymous and address-checked."""
        log.debug("fetching %s (%s)", url.shown, "with LS credentials" if with_credentials else "anonymous")
        if with_credentials:
            return self.ls.send(method, url, stream=True)  # type: ignore[union-attr]
        if self.ls is not None and self.ls.is_login_url(url):  # LS sends a refused token there
            raise LabelStudioAuthError(
                f"Label Studio redirected the image fetch to its login page ({url.shown})", AUTH_FIX
            )
        try:
            return self.session.request(method, url.url, stream=True, allow_redirects=False, timeout=self.timeout)
        except requests.Timeout:
            raise ImageFetchError(
                f"fetching {url.shown} timed out after {self.timeout:g} s",
                "Check that the image host is reachable from this backend, or raise FETCH_TIMEOUT_S",
                retryable=True,
            ) from None
        except requests.exceptions.SSLError:
            raise ImageFetchError(
                f"the TLS certificate of {url.shown} could not be verified",
                "Serve the image with a certificate valid for its host name (and a trusted CA)",
            ) from None
        except requests.RequestException as exc:
            raise ImageFetchError(
                f"cannot reach {url.shown} ({type(exc).__name__})",
                "Check that the image host is reachable from this backend (DNS, firewall, proxy)",
                retryable=True,
            ) from None

    def _status_error(self, ref: ImageRef, url: HttpUrl, status: int) -> BackendError:
        retryable = status >= 500 or status in (408, 429)
        on_ls = self._on_ls(url)
        if ref.kind == "cloud" and on_ls:
            return LabelStudioError(
                f"Label Studio could not presign {ref.source} for task {ref.task_id} (HTTP {status} from {url.shown})",
                "Check that the project has a cloud storage connected that covers this URI and that "
                "its credentials in Label Studio are valid",
                retryable=status >= 500,
            )
        where = "Label Studio" if on_ls else "the image host"
        if status == 404:
            fix = "Check that the file still exists (re-import the task or fix its URL)"
        elif status in (401, 403):
            fix = "The image host refused access; presigned URLs may have expired - retry, or make the image readable"
        else:
            fix = f"Retry later; {where} failed"
        return ImageFetchError(f"{where} answered HTTP {status} for {url.shown}", fix, retryable=retryable)
