"""Turn a task's image value into an ImageRef: what to fetch and a stable cache key. No I/O
except local-file path checks.

Kinds (Label Studio 1.23 task data, as in tests/fixtures/ls-samples):
- "ls":    a path on the LS host (`/data/upload/1/x.png`, `/storage-data/uploaded/?filepath=..`,
           a `/data/local-files/?d=..` when no local root is configured), joined with the LS base URL
           (the fetcher refuses LS paths that are not media paths, e.g. `/api/...`, with a 400);
- "local": `/data/local-files/?d=<path>` read from LOCAL_FILES_DOCUMENT_ROOT;
- "url":   an absolute http(s) URL (credentials only if it is a media path on the LS host);
- "cloud": s3:// gs:// azure-blob:// azure-spi://, fetched through the LS presign endpoint;
- "data":  a data: URI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import posixpath
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from backend.errors import BadRequest, ImageFetchError
from backend.net.netguard import ForbiddenImage
from backend.net.urls import HttpUrl, has_scheme, parse_http_url, shown_raw

CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")  # azure-spi: LS Enterprise service principal
_UNDEFINED_KEY = "$undefined$"  # LS's data key for files imported without a labeling config


@dataclass(frozen=True)
class ImageRef:
    """Where an image lives. `cache_key` is stable across requests (never a presigned URL)."""

    kind: str  # ls | local | url | cloud | data
    source: str  # the value as the task holds it, shortened for messages
    cache_key: str
    url: str = ""  # ls, url: the normalised absolute URL (http.url); cloud: the cloud URI
    path: str = ""  # local: the real path under the root
    task_id: Any = None  # as the task holds it; an int for cloud refs (the presign endpoint needs it)
    data: bytes = b""  # data: the decoded bytes
    http: HttpUrl | None = None  # ls, url: the one parsed URL that decides host, credentials, connection


def _shorten(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def resolve_image_ref(
    task: dict,
    image_value_key: str,
    *,
    ls_base_url: str = "",
    local_files_root: str = "",
) -> ImageRef:
    """The ImageRef for task.data[image_value_key] (the Image tag's value, `$image` or `image`).

    `ls_base_url`: LABEL_STUDIO_URL, else the `hostname` LS sent in /setup.
    `local_files_root`: LOCAL_FILES_DOCUMENT_ROOT; when empty, local files are fetched from LS.
    """
    key = image_value_key.lstrip("$")
    data = task.get("data") or {}
    value = data.get(key, data.get(_UNDEFINED_KEY))
    task_id = task.get("id")
    shown_id = task_id if isinstance(task_id, int) else _shorten(ascii(task_id), 40)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            f"task {shown_id} has no image URL in data.{key}",
            f'Make the labeling config\'s <Image value="${key}"> match a key of the task data',
        )
    value = value.strip()
    if any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise BadRequest(
            f"task {shown_id}: the image URL in data.{key} holds a lone surrogate (not valid Unicode)",
            "Store the image URL as valid UTF-8 text",
        )
    scheme = value.partition(":")[0].lower() if has_scheme(value) else ""
    if scheme == "data":
        payload = _decode_data_uri(value)
        digest = hashlib.sha256(payload).hexdigest()
        return ImageRef("data", _shorten(value, 60), f"sha256:{digest}", task_id=task_id, data=payload)
    if scheme in CLOUD_SCHEMES:
        return ImageRef("cloud", _shorten(value), value, url=value, task_id=_presign_task_id(task_id, value))
    if scheme in ("http", "https"):
        return _url_ref("url", value, task_id, f"task {shown_id}: the image URL")
    if scheme:
        raise BadRequest(
            f"task {shown_id}: unsupported image URL scheme {scheme!r} in {shown_raw(value)}",
            "Use an LS upload, local files, an http(s) URL, s3://, gs://, azure-blob:// or data:",
        )
    path = "/" + value.lstrip("/")
    if path.startswith("/upload/"):  # raw upload keys of export snapshots
        path = "/data" + path
    if path.startswith("/data/local-files") and local_files_root:
        real = local_file_path(local_files_root, path)
        return ImageRef("local", _shorten(value), f"file:{real}", path=real, task_id=task_id)
    if not ls_base_url:
        raise ImageFetchError(
            f"task {shown_id}: {_shorten(value)} is a Label Studio path but the LS address is unknown",
            "Set LABEL_STUDIO_URL (or connect the model in LS so /setup sends its hostname)",
            code="label_studio_url_missing",
        )
    return _url_ref("ls", ls_base_url.rstrip("/") + path, task_id, f"task {shown_id}: the Label Studio path")


def _url_ref(kind: str, text: str, task_id: Any, what: str) -> ImageRef:
    http = parse_http_url(text, what)  # UrlError (400) for what cannot be read one way only
    return ImageRef(kind, _shorten(http.shown), http.url, url=http.url, task_id=task_id, http=http)


def _presign_task_id(task_id: Any, uri: str) -> int:
    """LS presigns a cloud URI at /tasks/<id>/presign/: the id must be a task id, not any JSON value."""
    if isinstance(task_id, str) and task_id.isascii() and task_id.isdigit():
        return int(task_id)
    if isinstance(task_id, int) and not isinstance(task_id, bool) and task_id >= 0:
        return task_id
    problem = "the task has no id"
    if task_id is not None:
        problem = f"its id {_shorten(ascii(task_id), 40)} is not a non-negative integer"
    raise BadRequest(
        f"{_shorten(uri)} is a cloud URI, fetched through Label Studio's presign endpoint for its task, but {problem}",
        "Send tasks with their Label Studio id",
    )


def _decode_data_uri(value: str) -> bytes:
    header, sep, payload = value.partition(",")
    if not sep:
        raise BadRequest(f"malformed data: URI {_shorten(value, 60)}", "Use data:image/<type>;base64,<data>")
    if header.lower().endswith(";base64"):
        try:
            return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
        except (binascii.Error, ValueError):
            raise BadRequest(f"data: URI {_shorten(value, 60)} is not valid base64", "Re-encode the image") from None
    return unquote_to_bytes(payload)


def local_file_path(root: str, url: str) -> str:
    """The real path of a /data/local-files/?d=<path> URL, confined to `root`.

    Mirrors LS's own view: ?d= is relative to LOCAL_FILES_DOCUMENT_ROOT (a leading "/" is
    stripped, so "/etc/passwd" means <root>/etc/passwd). A ".." component is refused outright,
    and so is any path whose real location (symlinks resolved) lies outside the root.
    """
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("d") or [""]
    rel = values[-1]  # like Django's request.GET.get("d"): the last value wins
    fix = "Point ?d= at a file under LOCAL_FILES_DOCUMENT_ROOT, relative to it"
    if not rel or "\x00" in rel:
        raise BadRequest(f"local-files URL {_shorten(url)} has no valid ?d= path", fix)
    if ".." in rel.replace("\\", "/").split("/"):
        raise ForbiddenImage(f"local-files path {_shorten(rel)} contains '..'", fix)
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, posixpath.normpath(rel).lstrip("/")))
    if os.path.commonpath([candidate, real_root]) != real_root:
        raise ForbiddenImage(
            f"local-files path {_shorten(rel)} resolves outside LOCAL_FILES_DOCUMENT_ROOT (a symlink?)", fix
        )
    if not os.path.isfile(candidate):
        raise ImageFetchError(
            f"local file {_shorten(rel)} does not exist under LOCAL_FILES_DOCUMENT_ROOT={root}",
            "Mount the same directory Label Studio serves at the same LOCAL_FILES_DOCUMENT_ROOT, "
            "or unset it here to fetch local files through Label Studio",
        )
    return candidate
