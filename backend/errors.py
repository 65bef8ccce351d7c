"""Errors a user can cause or meet, each carrying its HTTP status, the cause and the fix."""

from __future__ import annotations


class BackendError(Exception):
    """An error that becomes a JSON response: {"error": code, "message": ..., "fix": ...}."""

    status = 400
    code = "bad_request"
    # True when the same call may succeed later (an upstream outage, not the user's input):
    # auto-annotate jobs retry those and fail the others at once.
    retryable = False

    def __init__(
        self,
        message: str,
        fix: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.fix = fix
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code

    def to_json(self) -> dict:
        body = {"error": self.code, "message": self.message}
        if self.fix:
            body["fix"] = self.fix
        return body


class BadRequest(BackendError):
    status, code = 400, "bad_request"


class Unauthorized(BackendError):
    status, code = 401, "unauthorized"


class NotFound(BackendError):
    status, code = 404, "not_found"


class PayloadTooLarge(BackendError):
    status, code = 413, "payload_too_large"


class UnsupportedMedia(BackendError):
    status, code = 415, "unsupported_media"


class Unprocessable(BackendError):
    status, code = 422, "unprocessable"


class ImageFetchError(BackendError):
    """The image could not be fetched from where the task points (upstream failure)."""

    status, code = 424, "image_unavailable"


class Overloaded(BackendError):
    """Temporary: out of GPU memory or queue full. Clients should retry."""

    status, code = 503, "overloaded"
    retryable = True


class DownloadTimeout(BackendError):
    """An image download (every redirect, the LS presign call, every byte) outlasted its deadline."""

    status, code = 504, "image_download_timeout"
    retryable = True
