"""Task images as the serving process sees them: LS credentials from the settings or /setup,
and the fetcher built for them. (How many request threads may wait on image hosts is bounded
where a click's whole cold path is: backend.interactive.cold_slots.)

backend.labelstudio.address's rules: LABEL_STUDIO_API_KEY only ever goes to LABEL_STUDIO_URL;
a /setup hostname (used only while LABEL_STUDIO_URL is unset) only with the access_token that
came with it. What /setup said reaches every process through Redis when there is one.
"""

from __future__ import annotations

import threading

import numpy as np

from backend.errors import ImageFetchError
from backend.images import ImageFetcher, ImageRef, load_image, resolve_image_ref
from backend.labelstudio.address import SetupInfo, SetupStore, parse_setup
from backend.labelstudio.client import LabelStudioAuthError, LabelStudioClient
from backend.settings import Settings


class LabelStudioImages:
    """Resolves and loads task images with the LS address and credentials in force (see module doc)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        # With both variables set nothing of /setup is used, so nothing of it is kept or shared.
        self._uses_setup = not (settings.label_studio_url and settings.label_studio_api_key)
        self._setup = SetupStore(
            settings.job_redis_url if self._uses_setup else "", f"sam-backend:{settings.rq_queue}:ls-setup"
        )
        self._identity: SetupInfo | None = None
        self._base_url = ""
        self._fetcher = self._build("", "")

    def configure(self, body: dict) -> None:
        """/setup: a bad body is a 400 before anything is kept, so it cannot break later clicks."""
        info = parse_setup(body, token_required=not self._settings.label_studio_url)
        if info is not None and self._uses_setup:
            self._setup.learn(info)

    def _current(self) -> tuple[str, ImageFetcher]:
        """The LS base URL and fetcher for what the latest /setup (in any process) said."""
        info = self._setup.current() if self._uses_setup else None
        with self._lock:
            if info is not None and info != self._identity:
                self._fetcher = self._build(info.hostname, info.access_token)
                self._identity = info
            return self._base_url, self._fetcher

    def _build(self, hostname: str, access_token: str) -> ImageFetcher:
        s = self._settings
        if s.label_studio_url:
            base, token = s.label_studio_url, s.label_studio_api_key or access_token
        else:  # never LABEL_STUDIO_API_KEY here: it belongs to LABEL_STUDIO_URL alone
            base, token = hostname, access_token
        client = None
        if base:
            client = LabelStudioClient(
                base, api_key=token, timeout=s.fetch_timeout_s, from_setup=not s.label_studio_url
            )
        self._base_url = base
        return ImageFetcher(
            client,
            local_files_root=s.local_files_document_root,
            max_image_bytes=s.max_image_bytes,
            allow_private_image_urls=s.allow_private_image_urls,
            timeout=s.fetch_timeout_s,
            deadline_s=s.download_deadline_s,
        )

    def resolve(self, task: dict, value_key: str) -> ImageRef:
        base_url, _ = self._current()
        try:
            return resolve_image_ref(
                task, value_key, ls_base_url=base_url, local_files_root=self._settings.local_files_document_root
            )
        except ImageFetchError as exc:
            raise self._explained(exc) from None

    def _explained(self, exc: ImageFetchError) -> ImageFetchError:
        """The LS address is unknown: say which of LABEL_STUDIO_URL, /setup or Redis is missing here."""
        if exc.code != "label_studio_url_missing":
            return exc
        s = self._settings
        fix = "Set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY"
        if self._setup.configured and not self._setup.shared:
            why = "Redis, through which the processes share what /setup said, is unreachable"
            fix += ", or bring Redis back"
        elif self._setup.configured:
            why = "no /setup has reached any process of this backend in the last day"
            fix += ", or make LS send /setup: reconnect the model (project Settings -> Model) or open a task"
        elif s.workers > 1:
            why = (
                f"/setup reached another of the WORKERS={s.workers} processes, and without Redis "
                "(REDIS_URL or QUEUE_REDIS_URL) they cannot share it"
            )
            fix += " (required with WORKERS > 1 and no Redis), or set REDIS_URL"
        else:
            why = "no /setup has reached this process since it started"
            fix += ", or connect the model in LS (project Settings -> Model), which sends /setup"
        return ImageFetchError(f"{exc.message}: LABEL_STUDIO_URL is not set and {why}", fix, code=exc.code)

    def load(self, ref: ImageRef, expected_size: tuple[int, int] | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB. `expected_size`: (width, height) as LS shows the image (a click knows it);
        a file of another size is refused from its header, before its pixels are decoded."""
        _, fetcher = self._current()
        try:
            return load_image(
                ref, fetcher, max_image_pixels=self._settings.max_image_pixels, expected_size=expected_size
            )
        except ImageFetchError as exc:  # a cloud URI needs LS's presign endpoint, hence its address
            raise self._explained(exc) from None
        except LabelStudioAuthError as exc:
            if self._settings.label_studio_url:
                raise
            raise LabelStudioAuthError(
                f"{exc.message}; the token was the access_token LS sent in /setup",
                "Set LABEL_STUDIO_URL together with LABEL_STUDIO_API_KEY (the key is only ever sent to "
                "LABEL_STUDIO_URL), or check that legacy tokens are enabled for the organization in LS",
            ) from None
