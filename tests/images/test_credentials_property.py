"""The LS token goes to the LS host and nowhere else, whatever the URL looks like.

A fake LS and a raw capture server listen on 127.0.0.1 on different ports. URLs built from
pieces that parsers disagree on (backslashes, '@', tabs and newlines, percent-encoded
separators, IPv6 forms, ports, userinfo) are used as task image URLs and as the Location of
redirects from the LS host. The capture server records the raw bytes of every request it gets:
the token must never be among them, and every failure must be a BackendError below 500.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.errors import BackendError
from backend.images import ForbiddenImage, ImageFetcher, resolve_image_ref
from backend.labelstudio.client import LabelStudioClient
from backend.net.transport import RedirectError
from backend.net.urls import UrlError
from tests.support.fake_http import FakeServer
from tests.support.raw_http import CaptureServer

SECRET = "prop-secret-token-0123456789"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "127.1", "2130706433", "0x7f.1")


@pytest.fixture(scope="module")
def fake_ls():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def capture():
    server = CaptureServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Never resolve or reach anything off this machine, whatever host a generated URL names."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        if str(host).strip("[]").lower().rstrip(".") not in LOOPBACK_NAMES:
            raise socket.gaierror(f"test: no DNS for {host!r}")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def fetch(ls_url: str, value: str, allow_private: bool) -> None:
    """Resolve and fetch a task image the way /predict does; BackendErrors are the expected refusals."""
    client = LabelStudioClient(ls_url, api_key=SECRET, timeout=3)
    fetcher = ImageFetcher(client, allow_private_image_urls=allow_private, timeout=3, deadline_s=10)
    fetcher.fetch(resolve_image_ref({"id": 1, "data": {"image": value}}, "$image", ls_base_url=ls_url))


def no_token_captured(capture: CaptureServer) -> None:
    leaked = [raw for raw in capture.raw if SECRET.encode() in raw]
    capture.raw.clear()
    assert not leaked, f"the LS token reached the capture server: {leaked[0][:300]!r}"


def outcome(run) -> BaseException | None:
    try:
        run()
    except BackendError as exc:
        assert exc.status < 500, f"{type(exc).__name__} {exc.status}: {exc.message}"
        assert exc.to_json()["message"].encode("utf-8")  # JSON-able: no lone surrogates
        return exc
    return None


# ---- property: generated URLs ------------------------------------------------------------------

PIECES = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::1",
    "]",
    "[",
    ":{LS}",
    ":{CAP}",
    ":99999",
    ":abc",
    ":",
    "@",
    "user:pw@",
    "\\",
    "/",
    "//",
    "?",
    "#",
    ".",
    "%40",
    "%2F",
    "%5C",
    "%2f",
    "%00",
    "\t",
    "\n",
    "\r",
    " ",
    "\x00",
    "\ud800",
    "\u3002",
    "\uff0e",
    "127.1",
    "0x7f.1",
    "2130706433",
    "/img/a.png",
    "?x=1",
    "#frag",
    "ls.example",
]
PREFIXES = ["http://", "HTTP://", "https://", "http:/", "http:\\\\", "http:", "//", "/", "", " http://"]
free_form = st.builds(
    lambda prefix, pieces: prefix + "".join(pieces),
    st.sampled_from(PREFIXES),
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=10),
)
# Two authorities glued by a separator that parsers split differently: which one is the host?
AUTHORITIES = ["127.0.0.1:{LS}", "127.0.0.1:{CAP}", "localhost:{CAP}", "[::1]:{CAP}", "127.1:{CAP}", "127.0.0.1"]
SEPARATORS = ["\\@", "\\\\@", "\\", "@", "%40", "%5C@", "%2F@", "\t@", "\n@", "#@", "?@", "/@", ";@", " @"]
confusing = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["http://", "HTTP://", "https://"]),
    st.sampled_from(AUTHORITIES),
    st.sampled_from(SEPARATORS),
    st.sampled_from(AUTHORITIES),
    st.sampled_from(["/img/a.png", "", "?x=1", "#f"]),
)
urls = st.one_of(free_form, confusing)


def filled(template: str, fake_ls: FakeServer, capture: CaptureServer) -> str:
    return template.replace("{LS}", str(fake_ls.port)).replace("{CAP}", str(capture.port))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=urls, allow_private=st.booleans())
def test_task_image_urls_never_send_the_token_elsewhere(fake_ls, capture, template, allow_private):
    outcome(lambda: fetch(fake_ls.url, filled(template, fake_ls, capture), allow_private))
    no_token_captured(capture)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=urls, allow_private=st.booleans(), status=st.sampled_from([301, 302, 303, 307, 308]))
def test_redirect_locations_from_ls_never_send_the_token_elsewhere(fake_ls, capture, template, allow_private, status):
    # As a server would send it: UTF-8 bytes, which HTTP clients read as latin-1.
    location = filled(template, fake_ls, capture).encode("utf-8", "surrogatepass").decode("latin-1")
    fake_ls.routes["/data/upload/1/r.png"] = lambda req: (status, {"Location": location}, b"")
    outcome(lambda: fetch(fake_ls.url, "/data/upload/1/r.png", allow_private))
    no_token_captured(capture)
    client = LabelStudioClient(fake_ls.url, api_key=SECRET, timeout=3)
    outcome(lambda: client.open("GET", "/data/upload/1/r.png").close())
    no_token_captured(capture)


# ---- explicit cases ----------------------------------------------------------------------------


@pytest.mark.parametrize("allow_private", [False, True])
def test_backslash_before_at_is_refused_and_sends_nothing(ls, cap, allow_private):
    url = f"http://127.0.0.1:{cap.port}\\@127.0.0.1:{ls.port}/img/a.png"
    err = outcome(lambda: fetch(ls.url, url, allow_private))
    assert isinstance(err, UrlError) and err.status == 400 and "backslash" in err.message
    assert cap.raw == [] and ls.seen == []


def test_backslash_redirect_from_ls_is_refused_and_sends_nothing(ls, cap):
    location = f"http://127.0.0.1:{cap.port}\\@127.0.0.1:{ls.port}/img/a.png"
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": location})
    err = outcome(lambda: fetch(ls.url, "/data/upload/1/a.png", False))
    assert isinstance(err, RedirectError) and err.status == 424 and "backslash" in err.message
    err = outcome(lambda: LabelStudioClient(ls.url, api_key=SECRET).open("GET", "/data/upload/1/a.png"))
    assert isinstance(err, RedirectError)
    assert cap.raw == []


def test_backslash_in_the_ls_url_itself_is_refused(ls, cap):
    with pytest.raises(BackendError) as err:
        LabelStudioClient(f"http://127.0.0.1:{cap.port}\\@127.0.0.1:{ls.port}", api_key=SECRET).get_task(1)
    assert err.value.code == "bad_label_studio_url" and err.value.status == 400
    assert cap.raw == []


@pytest.mark.parametrize(
    "template, reason",
    [
        ("http://127.0.0.1:{LS}\t/img/a.png", "control character"),
        ("http://127.0.0.1:{LS}/img/\na.png", "control character"),
        ("http://127.0.0.1\r\n:{LS}/img/a.png", "control character"),
        ("http://127.0.0.1:{LS}/img/a\u2028.png", "whitespace"),
        ("http://user:pw@127.0.0.1:{LS}/img/a.png", "user info"),
        ("http://127.0.0.1:{CAP}@127.0.0.1:{LS}/img/a.png", "user info"),
        ("http://127.0.0.1:{CAP}%2F@127.0.0.1:{LS}/img/a.png", "user info"),
        ("http://127.0.0.1%40127.0.0.1:{LS}/img/a.png", "not a valid host"),
        ("http://127.0.0.1%2F:{LS}/img/a.png", "not a valid host"),
        ("http://127.0.0.1:99999/img/a.png", "port"),
        ("http://127.0.0.1:abc/img/a.png", "port"),
        ("http://127.0.0.1:{LS}:{CAP}/img/a.png", "port"),
        ("http://[::1/img/a.png", "IPv6"),
        ("http://[::1]:{LS}]/img/a.png", "port"),
        ("http://[fe80::1%25lo]:{LS}/img/a.png", "zone"),
        ("http:///img/a.png", "no host"),
        ("http://:{LS}/img/a.png", "no host"),
        ("http://127.0.0.1:{LS}/img/\ud800.png", "surrogate"),
        ("http://b\u00fccher.example/a.png", "non-ASCII"),
    ],
)
def test_ambiguous_urls_are_400_before_any_connection(ls, cap, template, reason):
    url = template.replace("{LS}", str(ls.port)).replace("{CAP}", str(cap.port))
    err = outcome(lambda: fetch(ls.url, url, True))
    assert err is not None and err.status == 400 and reason in err.message, err
    assert cap.raw == [] and ls.seen == []
    if "\n" in url or "\r" in url or max(map(ord, url)) > 255:
        return  # cannot be sent as a header value
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": url})  # the same URL as a redirect
    err = outcome(lambda: fetch(ls.url, "/data/upload/1/a.png", True))
    assert isinstance(err, RedirectError) and reason in err.message
    assert cap.raw == [] and all(r.path == "/data/upload/1/a.png" for r in ls.seen)


def test_percent_encoded_separators_in_the_path_stay_in_the_path(ls, png):
    ls.serve("/data/upload/%2F%40%5C/a.png", png)  # a media path: credentials go only there
    fetch(ls.url, ls.url + "/data/upload/%2F%40%5C/a.png", False)
    assert (
        ls.seen[-1].path == "/data/upload/%2F%40%5C/a.png" and ls.seen[-1].headers["Authorization"] == f"Token {SECRET}"
    )


@pytest.mark.parametrize("host", ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost", "127.1", "2130706433"])
def test_other_spellings_of_the_ls_host_get_no_token(ls, host):
    ls.serve("/img/a.png", b"x")
    url = f"http://{host}:{ls.port}/img/a.png"
    err = outcome(lambda: fetch(ls.url, url, False))
    assert isinstance(err, ForbiddenImage)  # not the LS host: checked like any other, and loopback is private
    outcome(lambda: fetch(ls.url, url, True))
    assert all("Authorization" not in r.headers for r in ls.seen)


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:{CAP}/a.png", "//127.0.0.1:{CAP}/a.png", "HTTP://LOCALHOST:{CAP}/a.png"]
)
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_to_another_port_or_host_carry_no_token(ls, cap, location, status):
    ls.serve("/data/upload/1/a.png", status=status, headers={"Location": location.replace("{CAP}", str(cap.port))})
    err = outcome(lambda: fetch(ls.url, "/data/upload/1/a.png", True))
    assert err is not None and "404" in err.message  # the capture server's answer: it was reached
    assert len(cap.raw) == 1 and b"Authorization" not in cap.raw[0] and SECRET.encode() not in cap.raw[0]
    assert ls.seen[0].headers["Authorization"] == f"Token {SECRET}"


def test_redirect_to_another_ls_spelling_carries_no_token(ls):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": f"http://localhost:{ls.port}/b.png"})
    outcome(lambda: fetch(ls.url, "/data/upload/1/a.png", True))
    assert [r.path for r in ls.seen] == ["/data/upload/1/a.png", "/b.png"]
    assert "Authorization" not in ls.seen[1].headers
