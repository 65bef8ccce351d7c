"""Fetching through real local servers: credentials stay on the LS host, private addresses are
refused (only ever resolved, never connected to, except 127.0.0.1 test servers), bytes are capped."""

from __future__ import annotations

import base64
import socket
import time

import numpy as np
import pytest

from backend.errors import ImageFetchError, PayloadTooLarge, UnsupportedMedia
from backend.images import ForbiddenImage, ImageFetcher, load_image, resolve_image_ref
from backend.labelstudio.client import LabelStudioAuthError, LabelStudioClient, LabelStudioError
from backend.net.transport import RedirectError
from tests.support.fake_http import requires_token
from tests.support.ls_tokens import make_pat

TOKEN = "Token secret-key"


def task(value: str, task_id: int = 1) -> dict:
    return {"id": task_id, "data": {"image": value}}


def fetcher_for(ls, **kw) -> ImageFetcher:
    kw.setdefault("timeout", 5)
    return ImageFetcher(LabelStudioClient(ls.url, api_key="secret-key", timeout=kw["timeout"]), **kw)


def load(ls, value: str, fetcher: ImageFetcher | None = None, **resolve_kw) -> np.ndarray:
    fetcher = fetcher or fetcher_for(ls)
    ref = resolve_image_ref(task(value), "$image", ls_base_url=ls.url, **resolve_kw)
    return load_image(ref, fetcher)


def png_image(arr: np.ndarray) -> None:
    assert arr.shape == (3, 4, 3) and arr.dtype == np.uint8
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[2, 3].tolist() == [255, 255, 255]


def test_upload_fetched_with_token(ls, png):
    ls.routes["/data/upload/1/a.png"] = requires_token(TOKEN, lambda r: (200, {"Content-Type": "image/png"}, png))
    png_image(load(ls, "/data/upload/1/a.png"))
    assert ls.seen[-1].headers["Authorization"] == TOKEN


def test_upload_with_personal_access_token(ls, png):
    pat = make_pat()
    ls.routes["/api/token/refresh/"] = lambda r: (
        200,
        {"Content-Type": "application/json"},
        b'{"access": "a.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.c"}',
    )
    ls.routes["/data/upload/1/a.png"] = requires_token(
        "Bearer a.eyJ0b2tlbl90eXBlIjoiYWNjZXNzIn0.c", lambda r: (200, {}, png)
    )
    fetcher = ImageFetcher(LabelStudioClient(ls.url, api_key=pat))
    png_image(load(ls, "/data/upload/1/a.png", fetcher))


def test_wrong_token_for_upload_says_set_api_key(ls, png):
    ls.routes["/data/upload/1/a.png"] = requires_token("Token other", lambda r: (200, {}, png))
    with pytest.raises(LabelStudioAuthError) as err:
        load(ls, "/data/upload/1/a.png")
    assert "LABEL_STUDIO_API_KEY" in err.value.fix and "/data/upload/1/a.png" in err.value.message
    assert not err.value.retryable


def test_ls_redirect_to_other_host_carries_no_credentials(ls, ext, png):
    ext.serve("/bucket/a.png", png)
    ls.routes["/data/upload/1/a.png"] = requires_token(
        TOKEN, lambda r: (302, {"Location": ext.url + "/bucket/a.png"}, b"")
    )
    png_image(load(ls, "/data/upload/1/a.png", fetcher_for(ls, allow_private_image_urls=True)))
    assert ls.seen[-1].headers.get("Authorization") == TOKEN
    assert len(ext.seen) == 1 and "Authorization" not in ext.seen[0].headers and "Cookie" not in ext.seen[0].headers


def test_redirect_back_to_ls_after_foreign_hop_carries_no_credentials(ls, ext, png):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": ext.url + "/hop"})
    ext.serve("/hop", status=302, headers={"Location": ls.url + "/public/a.png"})
    ls.serve("/public/a.png", png)
    png_image(load(ls, "/data/upload/1/a.png", fetcher_for(ls, allow_private_image_urls=True)))
    assert "Authorization" not in ls.seen[-1].headers


def test_cloud_uri_presigned_and_fetched_without_credentials(ls, ext, png):
    uri = "s3://bucket/images/a.png"
    ext.serve("/bucket/images/a.png", png)

    def presign(req):
        assert base64.urlsafe_b64decode(req.query["fileuri"][0]).decode() == uri
        return 303, {"Location": ext.url + "/bucket/images/a.png?X-Amz-Signature=s3cr3t&X-Amz-Expires=60"}, b""

    ls.routes["/tasks/9/presign/"] = requires_token(TOKEN, presign)
    ref = resolve_image_ref(task(uri, 9), "image", ls_base_url=ls.url)
    assert ref.cache_key == uri  # not the presigned URL, which changes on every call
    png_image(load_image(ref, fetcher_for(ls, allow_private_image_urls=True)))
    assert "Authorization" not in ext.seen[0].headers and ext.seen[0].query["X-Amz-Signature"] == ["s3cr3t"]


def test_cloud_presign_failure_names_uri_and_fix(ls):
    ls.routes["/tasks/9/presign/"] = requires_token(TOKEN, lambda r: (404, {}, b"not found"))
    ref = resolve_image_ref(task("s3://bucket/missing.png", 9), "image", ls_base_url=ls.url)
    with pytest.raises(LabelStudioError) as err:
        load_image(ref, fetcher_for(ls))
    assert "s3://bucket/missing.png" in err.value.message and "storage" in err.value.fix
    assert err.value.status == 424 and not err.value.retryable


def test_cloud_uri_proxied_by_ls(ls, png):
    ls.routes["/tasks/9/presign/"] = requires_token(TOKEN, lambda r: (200, {"Content-Type": "image/png"}, png))
    ref = resolve_image_ref(task("gs://b/a.png", 9), "image", ls_base_url=ls.url)
    png_image(load_image(ref, fetcher_for(ls)))


def test_external_url_gets_no_credentials(ls, ext, png):
    ext.serve("/a.png", png)
    png_image(load(ls, ext.url + "/a.png", fetcher_for(ls, allow_private_image_urls=True)))
    assert "Authorization" not in ext.seen[0].headers


def test_absolute_url_on_ls_host_gets_credentials(ls, png):
    ls.routes["/data/upload/1/a.png"] = requires_token(TOKEN, lambda r: (200, {}, png))
    png_image(load(ls, ls.url + "/data/upload/1/a.png"))  # LS host: allowed though loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_non_ls_url_refused(ls, ext, host):
    url = ext.url.replace("127.0.0.1", host) + "/a.png"
    with pytest.raises(ForbiddenImage) as err:
        load(ls, url)
    assert err.value.status == 403 and "ALLOW_PRIVATE_IMAGE_URLS" in err.value.fix
    assert ext.seen == []


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if anything tries to open a socket to a non-loopback address."""
    real = socket.socket.connect

    def connect(sock, address):
        assert address[0] in ("127.0.0.1", "::1"), f"tried to connect to {address}"
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/a.png",
        "https://192.168.0.10/a.png",
        "http://[::1]:9/a.png",
        "http://[::ffff:10.0.0.1]/a.png",
        "http://100.64.0.1/a.png",
        "http://0.0.0.0:80/a.png",
    ],
)
def test_private_addresses_refused_without_connecting(ls, url, no_connect):
    with pytest.raises(ForbiddenImage, match="private"):
        load(ls, url)


def test_every_resolved_address_checked(ls, monkeypatch, no_connect):
    real = socket.getaddrinfo

    def fake(host, *args, **kw):
        if host == "images.example.com":  # one public, one private answer: refused
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 80)),
            ]
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ForbiddenImage, match="10.0.0.7"):
        load(ls, "http://images.example.com/a.png")


def test_https_checked_address_still_verifies_the_certificate_name(ls, tls_ext, tls_cert, png, monkeypatch):
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **kw: real("127.0.0.1" if host.endswith(".test") else host, *a, **kw)
    )
    tls_ext.serve("/a.png", png)
    fetcher = fetcher_for(ls, allow_private_image_urls=True)
    fetcher.session.verify = tls_cert[0]
    png_image(load(ls, f"https://images.test:{tls_ext.port}/a.png", fetcher))  # connected to 127.0.0.1, name checked
    with pytest.raises(ImageFetchError, match="TLS certificate"):
        load(ls, f"https://other.test:{tls_ext.port}/a.png", fetcher)  # certificate is not for this name
    strict = fetcher_for(ls)
    strict.session.verify = tls_cert[0]
    with pytest.raises(ForbiddenImage):
        load(ls, f"https://images.test:{tls_ext.port}/a.png", strict)


def test_next_checked_address_tried_when_one_is_down(ls, ext, png, monkeypatch):
    from backend.net import netguard

    real = socket.getaddrinfo

    def fake(host, port, *a, **kw):
        if host == "multi.test":  # the server listens on 127.0.0.1 only: 127.0.0.2 refuses
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.2", "127.0.0.1")]
        return real(host, port, *a, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    monkeypatch.setattr(netguard, "is_public", lambda ip: True)  # pretend both are public
    ext.serve("/a.png", png)
    png_image(load(ls, f"http://multi.test:{ext.port}/a.png"))
    assert ext.seen[0].headers["Host"] == f"multi.test:{ext.port}"


def test_each_redirect_hop_checked(ls, ext, png):
    ext.serve("/a.png", png)
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": ext.url + "/a.png"})
    with pytest.raises(ForbiddenImage):
        load(ls, "/data/upload/1/a.png")  # LS is allowed, its redirect to another loopback port is not
    assert ext.seen == []


def test_redirect_to_file_scheme_refused(ls):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(RedirectError, match="not http") as err:
        load(ls, "/data/upload/1/a.png")
    assert err.value.status == 424


def test_redirect_loop_stops(ls):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/data/upload/1/a.png"})
    with pytest.raises(Exception, match="too many redirects"):
        load(ls, "/data/upload/1/a.png")


def test_unresolvable_host_is_a_fetch_error(ls, monkeypatch):
    def fail(*a, **kw):
        raise socket.gaierror("no such host")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageFetchError, match="cannot resolve"):
        load(ls, "http://nowhere.invalid/a.png")


@pytest.mark.parametrize("chunked", [False, True])
def test_byte_cap(ls, chunked, png):
    big = png + b"\0" * 5000
    headers = {"Transfer-Encoding": "chunked"} if chunked else {}
    ls.routes["/data/upload/1/big.png"] = requires_token(TOKEN, lambda r: (200, headers, big))
    with pytest.raises(PayloadTooLarge) as err:
        load(ls, "/data/upload/1/big.png", fetcher_for(ls, max_image_bytes=4096))
    assert err.value.status == 413 and "MAX_IMAGE_BYTES" in err.value.fix


def test_404_names_url_and_fix(ls):
    with pytest.raises(ImageFetchError) as err:
        load(ls, "/data/upload/1/gone.png")
    assert err.value.status == 424 and "/data/upload/1/gone.png" in err.value.message and "404" in err.value.message
    assert "exists" in err.value.fix and not err.value.retryable


def test_upstream_5xx_is_retryable(ls):
    ls.serve("/data/upload/1/a.png", status=503)
    with pytest.raises(ImageFetchError) as err:
        load(ls, "/data/upload/1/a.png")
    assert err.value.retryable and "503" in err.value.message


def test_timeout_names_url_and_fix(ls, ext, png):
    def slow(req):
        time.sleep(1.0)
        return 200, {}, png

    ext.routes["/slow.png"] = slow
    with pytest.raises(ImageFetchError) as err:
        load(ls, ext.url + "/slow.png", fetcher_for(ls, allow_private_image_urls=True, timeout=0.3))
    assert "timed out" in err.value.message and "/slow.png" in err.value.message and err.value.fix
    assert err.value.retryable


def test_unreachable_host(ls, ext):
    url = ext.url + "/a.png"
    ext.close()
    with pytest.raises(ImageFetchError, match="cannot reach"):
        load(ls, url, fetcher_for(ls, allow_private_image_urls=True))


def test_signed_query_masked_in_errors(ls, ext):
    ext.serve("/a.png", status=403)
    with pytest.raises(ImageFetchError) as err:
        load(
            ls, ext.url + "/a.png?X-Amz-Signature=s3cr3t&sig=azure&v=1", fetcher_for(ls, allow_private_image_urls=True)
        )
    assert "s3cr3t" not in err.value.message and "azure" not in err.value.message and "v=1" in err.value.message


def test_html_login_page_is_unsupported_media(ls):
    ls.serve(
        "/data/upload/1/a.png",
        b"<!DOCTYPE html><html><title>Login</title></html>",
        headers={"Content-Type": "text/html"},
    )
    with pytest.raises(UnsupportedMedia) as err:
        load(ls, "/data/upload/1/a.png")
    assert (
        err.value.status == 415
        and "/data/upload/1/a.png" in err.value.message
        and "LABEL_STUDIO_API_KEY" in err.value.fix
    )


def test_data_uri(ls, png):
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    ref = resolve_image_ref(task(uri), "image")
    png_image(load_image(ref, ImageFetcher(None)))
    assert ls.seen == []
    with pytest.raises(PayloadTooLarge):
        ImageFetcher(None, max_image_bytes=10).fetch(ref)


def test_ls_path_without_ls_client(png):
    ref = resolve_image_ref(task("/data/upload/1/a.png"), "image", ls_base_url="http://ls:8080")
    with pytest.raises(ImageFetchError, match="no LS client"):
        ImageFetcher(None).fetch(ref)


# ---- local files --------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path, png):
    base = tmp_path / "root"
    (base / "set1").mkdir(parents=True)
    (base / "set1" / "a.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(png)
    (base / "set1" / "escape.png").symlink_to(tmp_path / "secret.png")
    (base / "set1" / "inside.png").symlink_to(base / "set1" / "a.png")
    return base


def test_local_file_read_from_root(ls, root):
    ref = resolve_image_ref(
        task("/data/local-files/?d=set1/a.png"), "image", ls_base_url=ls.url, local_files_root=str(root)
    )
    assert ref.kind == "local" and ref.cache_key == f"file:{root / 'set1' / 'a.png'}"
    png_image(load_image(ref, fetcher_for(ls, local_files_root=str(root))))
    assert ls.seen == []


def test_local_symlink_inside_root_is_fine(ls, root):
    ref = resolve_image_ref(task("/data/local-files/?d=set1/inside.png"), "image", local_files_root=str(root))
    assert ref.path == str(root / "set1" / "a.png")  # the real path: one cache key for both names


@pytest.mark.parametrize(
    "d", ["../secret.png", "set1/../../secret.png", "set1/..%2F..%2Fsecret.png", "..\\secret.png", "set1/escape.png"]
)
def test_local_files_confined_to_root(ls, root, d):
    with pytest.raises(ForbiddenImage) as err:
        resolve_image_ref(task(f"/data/local-files/?d={d}"), "image", ls_base_url=ls.url, local_files_root=str(root))
    assert err.value.status == 403 and "LOCAL_FILES_DOCUMENT_ROOT" in err.value.message + err.value.fix


def test_local_absolute_path_stays_under_root(ls, root, tmp_path):
    # Like LS's own view, "?d=/x" means <root>/x: an absolute path never reaches outside the root.
    secret = str(tmp_path / "secret.png")
    with pytest.raises(ImageFetchError, match="does not exist under LOCAL_FILES_DOCUMENT_ROOT"):
        resolve_image_ref(task(f"/data/local-files/?d={secret}"), "image", local_files_root=str(root))
    ref = resolve_image_ref(task("/data/local-files/?d=/set1/a.png"), "image", local_files_root=str(root))
    assert ref.path == str(root / "set1" / "a.png")


def test_local_file_byte_cap(ls, root):
    ref = resolve_image_ref(task("/data/local-files/?d=set1/a.png"), "image", local_files_root=str(root))
    with pytest.raises(PayloadTooLarge):
        ImageFetcher(None, local_files_root=str(root), max_image_bytes=10).fetch(ref)


def test_local_file_rechecked_at_read_time(root, tmp_path):
    ref = resolve_image_ref(task("/data/local-files/?d=set1/a.png"), "image", local_files_root=str(root))
    with pytest.raises(ForbiddenImage):  # a fetcher without (or with another) root reads nothing
        ImageFetcher(None).fetch(ref)
    with pytest.raises(ForbiddenImage):
        ImageFetcher(None, local_files_root=str(root / "set1" / "sub")).fetch(ref)
    (root / "set1" / "a.png").unlink()
    (root / "set1" / "a.png").symlink_to(tmp_path / "secret.png")  # swapped after resolving
    with pytest.raises(ForbiddenImage):
        ImageFetcher(None, local_files_root=str(root)).fetch(ref)


def test_local_files_without_root_fetched_from_ls(ls, png):
    ls.routes["/data/local-files/"] = requires_token(
        TOKEN, lambda r: (200, {}, png) if r.query["d"] == ["set1/a.png"] else (404, {}, b"")
    )
    png_image(load(ls, "/data/local-files/?d=set1/a.png"))
