"""Turn a task's image value into an ImageRef: what to fetch and a stable cache key. No I/O
except local-file path checks.

Kinds (Label Studio 1.23 task data, see ../shared/DESIGN.md):
- "ls":    a path on the LS host (`/data/upload/1/x.png`, `/storage-data/uploaded/?filepath=..`,
           a `/data/local-files/?d=..` when no local root is configured), joined with the LS base URL;
- "local": `/data/local-files/?d=<path>` read from LOCAL_FILES_DOCUMENT_ROOT;
- "url":   an absolute http(s) URL (credentials only if it is the LS host);
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
from urllib.parse import parse_qs, parse_qsl, unquote_to_bytes, urlencode, urlsplit, urlunsplit

from backend.errors import BackendError, BadRequest, ImageFetchError

CLOUD_SCHEMES = ("s3", "gs", "azure-blob", "azure-spi")  # azure-spi: LS Enterprise service principal
_UNDEFINED_KEY = "$undefined$"  # LS's data key for files imported without a labeling config
_SECRET_PARAM_PARTS = ("sig", "token", "key", "cred", "auth", "secret", "pass", "security")


class ForbiddenImage(BackendError):
    """The task points somewhere this backend must not read (outside the root, a private address)."""

    status, code = 403, "image_forbidden"


@dataclass(frozen=True)
class ImageRef:
    """Where an image lives. `cache_key` is stable across requests (never a presigned URL)."""

    kind: str  # ls | local | url | cloud | data
    source: str  # the value as the task holds it, shortened for messages
    cache_key: str
    url: str = ""  # ls, url: absolute URL; cloud: the cloud URI
    path: str = ""  # local: the real path under the root
    task_id: int | None = None
    data: bytes = b""  # data: the decoded bytes


def shown_url(url: str) -> str:
    """A URL safe to log or put in an error: no userinfo, signature/token query values masked."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    query = [
        (k, "***" if any(p in k.lower() for p in _SECRET_PARAM_PARTS) else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="/*"), ""))


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
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(
            f"task {task_id} has no image URL in data.{key}",
            f'Make the labeling config\'s <Image value="${key}"> match a key of the task data',
        )
    value = value.strip()
    scheme = urlsplit(value).scheme.lower()
    if scheme == "data":
        payload = _decode_data_uri(value)
        digest = hashlib.sha256(payload).hexdigest()
        return ImageRef("data", _shorten(value, 60), f"sha256:{digest}", task_id=task_id, data=payload)
    if scheme in CLOUD_SCHEMES:
        if task_id is None:
            raise BadRequest(f"{value} is a cloud URI but the task has no id", "Send tasks with their id")
        return ImageRef("cloud", _shorten(value), value, url=value, task_id=int(task_id))
    if scheme in ("http", "https"):
        url = _without_fragment(value)
        return ImageRef("url", _shorten(shown_url(url)), url, url=url, task_id=task_id)
    if scheme:
        raise BadRequest(
            f"task {task_id}: unsupported image URL scheme {scheme!r} in {_shorten(value)}",
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
            f"task {task_id}: {_shorten(value)} is a Label Studio path but the LS address is unknown",
            "Set LABEL_STUDIO_URL (or connect the model in LS so /setup sends its hostname)",
            code="label_studio_url_missing",
        )
    url = ls_base_url.rstrip("/") + path
    return ImageRef("ls", _shorten(shown_url(url)), url, url=url, task_id=task_id)


def _without_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path or "/", parts.query, ""))


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
