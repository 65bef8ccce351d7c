"""Where LS credentials and LS-host connections may go.

- Credentials go only to LS *media* paths (uploads, local files, storage data, the per-task
  resolve/presign endpoint): a task value naming LS's API is a 400 before any request, and a
  redirect hop to a non-media LS path carries no credentials.
- An LS host that came from /setup (`from_setup=True`) is never connected to on a link-local,
  multicast, unspecified or metadata address, checked at connect time; loopback and private
  addresses (LS on a docker network or localhost) keep working.
- A redirect Location holding raw UTF-8 bytes is read as UTF-8, not as latin-1 mojibake.
"""

from __future__ import annotations

import base64
import socket

import pytest

from backend.errors import BadRequest
from backend.images import ForbiddenImage, ImageFetcher, load_image, resolve_image_ref
from backend.labelstudio.client import LabelStudioAuthError, LabelStudioClient
from backend.net.urls import parse_http_url
from tests.support.fake_http import requires_token

TOKEN = "Token secret-key"


def fetch(ls_url: str, value: str, *, from_setup: bool = False) -> bytes:
    client = LabelStudioClient(ls_url, api_key="secret-key", timeout=5, from_setup=from_setup)
    ref = resolve_image_ref({"id": 5, "data": {"image": value}}, "$image", ls_base_url=ls_url)
    return ImageFetcher(client, timeout=5, deadline_s=10).fetch(ref)


# ---- credentials only to LS media paths --------------------------------------------------------

API_VALUES = [
    "/api/projects/?page_size=1000",
    "/api/current-user/token",
    "{LS}/api/current-user/token",  # an absolute URL on the LS origin
    "/data/upload/../../api/current-user/token",  # HTTP clients resolve dot segments before sending
    "/data/upload/%2e%2e/%2E%2E/api/current-user/token",  # a proxy in front of LS may decode and resolve them
    "/tasks/5/presign/../../api/projects/",
    "/user/account",
]


@pytest.mark.parametrize("value", API_VALUES)
def test_a_task_value_naming_an_ls_api_path_is_a_400_before_any_request(ls, value):
    with pytest.raises(BadRequest) as err:
        fetch(ls.url, value.replace("{LS}", ls.url))
    assert err.value.status == 400 and "not a media path" in err.value.message
    assert "/api/" in err.value.message or "/user/account" in err.value.message  # names the path
    assert ls.seen == []


FILEURI = base64.urlsafe_b64encode(b"s3://bucket/a.png").decode()
MEDIA_VALUES = [
    "/data/upload/1/a.png",
    "/data/local-files/?d=images/a.png",
    "/storage-data/uploaded/?filepath=upload/1/a.png",
    f"/tasks/5/resolve/?fileuri={FILEURI}",  # what LS 1.23 writes into task data for cloud URIs
    f"/tasks/5/presign/?fileuri={FILEURI}",
    "{LS}/data/upload/1/a.png",
]


@pytest.mark.parametrize("value", MEDIA_VALUES)
def test_ls_media_paths_get_credentials(ls, png, value):
    path = value.replace("{LS}", "").partition("?")[0]
    ls.routes[path] = requires_token(TOKEN, lambda r: (200, {}, png))
    assert fetch(ls.url, value.replace("{LS}", ls.url)) == png
    assert ls.seen[-1].headers["Authorization"] == TOKEN


@pytest.mark.parametrize("location", ["/api/current-user/token", "/data/upload/../../api/projects/"])
def test_a_redirect_from_a_media_path_to_the_ls_api_carries_no_credentials(ls, location):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": location})
    with pytest.raises(Exception):  # noqa: B017 - the API path answers 404 here; what matters is what was sent
        fetch(ls.url, "/data/upload/1/a.png")
    assert ls.seen[0].headers["Authorization"] == TOKEN
    assert len(ls.seen) == 2 and "Authorization" not in ls.seen[1].headers


def test_a_redirect_to_the_login_page_is_an_auth_error_without_asking_it(ls):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/user/login/?next=/data/upload/1/a.png"})
    with pytest.raises(LabelStudioAuthError, match="login page"):
        fetch(ls.url, "/data/upload/1/a.png")
    assert [r.path for r in ls.seen] == ["/data/upload/1/a.png"]


def test_media_paths_are_below_the_ls_base_path():
    client = LabelStudioClient("http://ls:8080/label-studio", api_key="k")
    assert client.is_media_url(parse_http_url("http://ls:8080/label-studio/data/upload/1/a.png"))
    assert not client.is_media_url(parse_http_url("http://ls:8080/data/upload/1/a.png"))
    assert not client.is_media_url(parse_http_url("http://ls:8080/label-studio/api/tasks/1/"))
    assert not client.is_media_url(parse_http_url("http://ls:9090/label-studio/data/upload/1/a.png"))
    assert not client.is_media_url(parse_http_url("http://ls:8080/label-studio/tasks/x/resolve/"))


# ---- a /setup host is never a link-local, multicast, unspecified or metadata address ------------


@pytest.fixture
def no_connect(monkeypatch):
    """Fail the test if anything tries to open a socket to a non-loopback address."""
    real = socket.socket.connect

    def connect(sock, address):
        assert address[0] in ("127.0.0.1", "::1"), f"tried to connect to {address}"
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


SETUP_HOSTS = [
    "http://169.254.169.254",  # AWS/GCP/Azure metadata (link-local)
    "http://[fd00:ec2::254]",  # AWS IMDS over IPv6 (a unique-local address)
    "http://[::ffff:169.254.169.254]",
    "http://[fe80::1]:8080",
    "http://0.0.0.0:9400",  # unspecified: the kernel connects it to this machine
    "http://224.0.0.1",
    "http://255.255.255.255",
]


@pytest.mark.parametrize("base", SETUP_HOSTS)
def test_a_setup_host_on_a_non_unicast_address_is_refused_without_connecting(base, no_connect):
    with pytest.raises(ForbiddenImage, match="/setup") as err:
        fetch(base, "/data/upload/1/a.png", from_setup=True)
    assert err.value.status == 403 and "LABEL_STUDIO_URL" in err.value.fix


def test_a_setup_host_name_is_checked_at_connect_time_for_every_address(monkeypatch, no_connect):
    real = socket.getaddrinfo

    def fake(host, port, *args, **kw):
        if host == "ls.test":  # a rebinding name: one loopback answer, one metadata answer
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("127.0.0.1", "169.254.169.254")]
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ForbiddenImage, match="169.254.169.254"):
        fetch("http://ls.test:8080", "/data/upload/1/a.png", from_setup=True)


def test_a_setup_host_on_loopback_still_works_and_its_redirects_are_checked(ls, png, monkeypatch):
    """The default set-up (LS on localhost or a private docker network) keeps working; an
    anonymous hop back to the /setup host is checked by the same rule."""
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda host, *a, **kw: real("127.0.0.1" if host == "localhost" else host, *a, **kw)
    )
    ls.routes["/data/upload/1/a.png"] = requires_token(TOKEN, lambda r: (200, {}, png))
    base = ls.url.replace("127.0.0.1", "localhost")
    assert fetch(base, "/data/upload/1/a.png", from_setup=True) == png
    ls.serve("/data/upload/2/a.png", status=302, headers={"Location": "/user/avatar.png"})
    ls.serve("/user/avatar.png", png)
    assert fetch(base, "/data/upload/2/a.png", from_setup=True) == png  # anonymous hop, loopback allowed
    assert "Authorization" not in ls.seen[-1].headers


def test_ls_from_label_studio_url_is_not_restricted(monkeypatch):
    """LABEL_STUDIO_URL is the operator's: no address rule applies to it (checked without connecting)."""
    from backend.net.netguard import AddressPolicy

    policy = AddressPolicy(False, ("169.254.1.2", 80))
    assert policy.connect_addresses("169.254.1.2", 80) == ["169.254.1.2"]
    with pytest.raises(ForbiddenImage):
        AddressPolicy(False, ("169.254.1.2", 80), ls_from_setup=True).connect_addresses("169.254.1.2", 80)


# ---- redirect Locations with raw UTF-8 bytes ----------------------------------------------------


def test_a_raw_utf8_location_is_read_as_utf8(ls, png):
    # http.server writes header values as latin-1: these two characters go out as the bytes C3 A9,
    # the UTF-8 encoding of 'é', as a server that puts UTF-8 in its headers does.
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/data/upload/1/\u00c3\u00a9.png"})
    ls.routes["/data/upload/1/%C3%A9.png"] = requires_token(TOKEN, lambda r: (200, {}, png))
    assert fetch(ls.url, "/data/upload/1/a.png") == png
    assert [r.path for r in ls.seen] == ["/data/upload/1/a.png", "/data/upload/1/%C3%A9.png"]


def test_a_location_that_is_not_utf8_is_parsed_as_it_came(ls, png):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/data/upload/1/\u00e9.png"})  # byte E9 alone
    ls.serve("/data/upload/1/%C3%A9.png", png)
    assert fetch(ls.url, "/data/upload/1/a.png") == png


def test_load_image_passes_the_expected_size(ls, png):
    ls.serve("/data/upload/1/a.png", png)
    client = LabelStudioClient(ls.url, api_key="secret-key")
    ref = resolve_image_ref({"id": 1, "data": {"image": "/data/upload/1/a.png"}}, "image", ls_base_url=ls.url)
    assert load_image(ref, ImageFetcher(client), expected_size=(4, 3)).shape == (3, 4, 3)
    with pytest.raises(Exception, match="Label Studio shows this image as 3x4 but the file is 4x3"):
        load_image(ref, ImageFetcher(client), expected_size=(3, 4))
