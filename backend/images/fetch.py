"""Fetch an ImageRef's bytes, with a byte cap, without ever sending LS credentials elsewhere.

Redirects are followed by hand (at most 5 hops). A hop gets LS credentials only while the whole
chain so far stayed on the LS host; from the first foreign hop on, every request goes through
the address-checked session (netguard) with no credentials at all.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urljoin, urlsplit

import requests

from backend.errors import ImageFetchError, PayloadTooLarge
from backend.images.netguard import AddressPolicy, guarded_session
from backend.images.refs import ForbiddenImage, ImageRef, shown_url
from backend.ls_client import LabelStudioClient, origin, read_capped

log = logging.getLogger(__name__)
_REDIRECTS = (301, 302, 303, 307, 308)
_MAX_HOPS = 5


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
    ):
        self.ls = ls
        self.local_files_root = local_files_root
        self.max_image_bytes = max_image_bytes
        self.timeout = timeout
        allowed = set()
        if ls is not None:
            _, host, port = origin(ls.base_url)
            allowed.add((host, port))
        self.session = guarded_session(AddressPolicy(allow_private_image_urls, allowed))

    def fetch(self, ref: ImageRef) -> bytes:
        """The raw bytes of the image `ref` points at."""
        if ref.kind == "data":
            if len(ref.data) > self.max_image_bytes:
                raise self._too_large(ref.source)
            return ref.data
        if ref.kind == "local":
            return self._read_local(ref.path)
        if ref.kind == "cloud":
            url = self._ls(ref).presign(ref.task_id, ref.url)
            return self._fetch_url(url)
        if ref.kind == "ls":
            self._ls(ref)
        return self._fetch_url(ref.url)

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

    def _fetch_url(self, url: str) -> bytes:
        trusted = True  # may the current hop carry LS credentials?
        for _ in range(_MAX_HOPS + 1):
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                raise ImageFetchError(f"refusing to fetch {shown_url(url)}: not http(s)", "Use an http(s) image URL")
            trusted = trusted and self.ls is not None and self.ls.is_ls_url(url)
            log.debug("fetching %s (%s)", shown_url(url), "with LS credentials" if trusted else "anonymous")
            resp = self._get(url, trusted)
            if resp.status_code in _REDIRECTS and "Location" in resp.headers:
                resp.close()
                url = urljoin(url, resp.headers["Location"])
                continue
            if resp.status_code != 200:
                resp.close()
                raise self._status_error(url, resp.status_code)
            return read_capped(resp, self.max_image_bytes, shown_url(url))
        raise ImageFetchError(f"too many redirects fetching {shown_url(url)}", "Use a direct image URL")

    def _get(self, url: str, trusted: bool) -> requests.Response:
        if trusted:
            return self.ls.open("GET", url, stream=True)  # type: ignore[union-attr]
        try:
            return self.session.get(url, stream=True, allow_redirects=False, timeout=self.timeout)
        except requests.Timeout:
            raise ImageFetchError(
                f"fetching {shown_url(url)} timed out after {self.timeout:g} s",
                "Check that the image host is reachable from this backend, or raise FETCH_TIMEOUT_S",
                retryable=True,
            ) from None
        except requests.exceptions.SSLError:
            raise ImageFetchError(
                f"the TLS certificate of {shown_url(url)} could not be verified",
                "Serve the image with a certificate valid for its host name (and a trusted CA)",
            ) from None
        except requests.RequestException as exc:
            raise ImageFetchError(
                f"cannot reach {shown_url(url)} ({type(exc).__name__})",
                "Check that the image host is reachable from this backend (DNS, firewall, proxy)",
                retryable=True,
            ) from None

    def _status_error(self, url: str, status: int) -> ImageFetchError:
        where = "Label Studio" if self.ls is not None and self.ls.is_ls_url(url) else "the image host"
        if status == 404:
            fix = "Check that the file still exists (re-import the task or fix its URL)"
        elif status in (401, 403):
            fix = "The image host refused access; presigned URLs may have expired - retry, or make the image readable"
        else:
            fix = f"Retry later; {where} failed"
        retryable = status >= 500 or status in (408, 429)
        return ImageFetchError(f"{where} answered HTTP {status} for {shown_url(url)}", fix, retryable=retryable)


def fetch_image_bytes(ref: ImageRef, fetcher: ImageFetcher) -> bytes:
    """The image's raw bytes (data: URI, local file, LS, http(s), or cloud via LS presign)."""
    return fetcher.fetch(ref)
