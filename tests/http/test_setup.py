"""/setup: who may send what where, bad bodies, and what every worker learns from it.

The rules (backend.labelstudio.address): LABEL_STUDIO_API_KEY only ever goes to LABEL_STUDIO_URL; a
/setup hostname is used only while LABEL_STUDIO_URL is unset and only with the access_token
that came with it; a bad /setup is a 400 that changes nothing; what /setup said reaches every
gunicorn and RQ worker through Redis. Also /versions and the interactive model version.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.labelstudio.address import SETUP_TTL_S
from backend.settings import Settings
from backend.web.app import build_backend, create_app
from tests.support.samples import LS_TOKEN, sample
from tests.support.server_log import answering_pids

SECRET = "configuredsecret0123456789abcdef01234567"  # LABEL_STUDIO_API_KEY in these tests
CLICK = sample("predict_interactive_request.json")  # a click on /data/upload/1/cd422a2f-up0.png
SETUP_KEY = "sam-backend:sam-auto-annotate:ls-setup"


class CaptureServer:
    """A host that records every request it gets (headers and body) and answers 404."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        capture = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("latin-1") if length else ""
                capture.seen.append(f"{self.command} {self.path}\n{self.headers}\n{body}")
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = _record  # http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capture():
    server = CaptureServer()
    yield server
    server.close()


def app_client(**settings):
    return create_app(Settings(sam_engine="grabcut", **settings)).test_client()


OPEN_SETUP_WARNING = "any client that can reach this backend can send /setup"


def other_warnings(client) -> list[str]:
    """/health's warnings but the one every set-up without LABEL_STUDIO_URL and basic auth gets."""
    return [w for w in client.get("/health").json["warnings"] if OPEN_SETUP_WARNING not in w]


@pytest.fixture
def shared_redis(redis_server):
    """The module's Redis without a /setup value left by an earlier test."""
    redis_server.client().delete(SETUP_KEY)
    return redis_server


def setup_body(hostname: object, access_token: object = LS_TOKEN) -> dict:
    return {**sample("setup_request.json"), "hostname": hostname, "access_token": access_token}


# ---- a configured secret only goes to the configured address ----------------------------------


def test_hostile_setup_never_receives_the_configured_api_key(capture):
    """LABEL_STUDIO_URL unset, LABEL_STUDIO_API_KEY set: a /setup naming another host gets that host
    only its own token back, never ours (once the key went to whatever hostname /setup named)."""
    client = app_client(label_studio_api_key=SECRET)
    assert client.post("/setup", json=setup_body(capture.url, "callersowntoken")).status_code == 200
    assert client.post("/predict", json=CLICK).status_code >= 400  # the capture host answered 404
    assert capture.seen, "the click should have gone to the /setup hostname"
    assert not any(SECRET in request for request in capture.seen)
    assert all("Authorization: Token callersowntoken" in request for request in capture.seen)

    # Without a token of its own a hostname is refused and changes nothing; the key still never leaves.
    capture.seen.clear()
    refused = client.post("/setup", json=setup_body("http://127.0.0.2:9", None))
    assert refused.status_code == 400 and "LABEL_STUDIO_URL" in refused.json["fix"]
    client.post("/predict", json=CLICK)
    assert not any(SECRET in request for request in capture.seen)


def test_with_label_studio_url_set_a_setup_hostname_is_never_contacted(capture, fake_ls):
    client = app_client(label_studio_url=fake_ls.url, label_studio_api_key=LS_TOKEN)
    assert client.post("/setup", json=setup_body(capture.url, "callersowntoken")).status_code == 200
    assert client.post("/predict", json=CLICK).status_code == 200
    assert capture.seen == []


def test_an_empty_token_never_replaces_the_setup_token(fake_ls, shared_redis):
    """LABEL_STUDIO_URL set, no key: the /setup token is what clicks carry. An anonymous /setup with an
    empty token must not replace it (clicks then went out without Authorization), here or through Redis."""
    client = app_client(label_studio_url=fake_ls.url, redis_url=shared_redis.url)
    assert client.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    for empty in ("", None):
        assert client.post("/setup", json=setup_body("http://whatever", empty)).status_code == 200
        assert client.post("/predict", json=CLICK).status_code == 200
    assert json.loads(shared_redis.client().get(SETUP_KEY))["access_token"] == LS_TOKEN
    other = app_client(label_studio_url=fake_ls.url, redis_url=shared_redis.url)  # another process
    assert other.post("/predict", json=CLICK).status_code == 200


def test_health_warns_while_anyone_can_steer_image_fetches_through_setup():
    """No LABEL_STUDIO_URL and no basic auth: any client can name the LS host in /setup. /health says so
    and what to set; either setting silences it."""
    (warning,) = app_client().get("/health").json["warnings"]
    assert "any client that can reach this backend can send /setup" in warning
    assert "LABEL_STUDIO_URL" in warning and "BASIC_AUTH_USER" in warning and "link-local" in warning
    assert app_client(label_studio_url="http://ls:8080").get("/health").json["warnings"] == []
    with_auth = app_client(basic_auth_user="u", basic_auth_pass="p")
    auth = {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}
    assert with_auth.get("/health", headers=auth).json["warnings"] == []


def test_health_warns_that_the_api_key_alone_is_unused():
    (warning,) = other_warnings(app_client(label_studio_api_key=SECRET))
    assert "only ever sent to LABEL_STUDIO_URL" in warning


# ---- a bad /setup is a 400 and poisons nothing ------------------------------------------------

BAD_SETUPS = [
    ({"hostname": ":99999"}, "hostname"),
    ({"hostname": "http://[::1"}, "hostname"),
    ({"hostname": "http://127.0.0.1:99999"}, "hostname"),
    ({"hostname": "http://127.0.0.1:0"}, "hostname"),
    ({"hostname": "http://127.0.0.1:port"}, "hostname"),
    ({"hostname": "ftp://127.0.0.1"}, "hostname"),
    ({"hostname": "127.0.0.1:8080"}, "hostname"),
    ({"hostname": "http://"}, "hostname"),
    ({"hostname": "http://me:pw@127.0.0.1"}, "hostname"),
    ({"hostname": "http://127.0.0.1/?next=1"}, "hostname"),
    ({"hostname": "http://127.0.0.1\r\nX-Evil: 1"}, "hostname"),
    ({"hostname": "http://127.0.0.1/\x00"}, "hostname"),
    ({"hostname": "http://exa mple"}, "hostname"),
    ({"hostname": "http://h\u00e9llo"}, "hostname"),
    ({"hostname": "http://" + "a" * 3000}, "hostname"),
    ({"hostname": "http://ls/" + "%" * 2000}, "hostname"),  # 2010 characters, 6010 once normalised ('%25')
    ({"hostname": 8080}, "hostname"),
    ({"hostname": ["http://127.0.0.1"]}, "hostname"),
    ({"access_token": 12345}, "access_token"),
    ({"access_token": "tok\nen"}, "access_token"),
    ({"access_token": "t\u00f6ken"}, "access_token"),
]


@pytest.mark.parametrize("change, field", BAD_SETUPS, ids=[repr(c)[:50] for c, _ in BAD_SETUPS])
def test_bad_setup_is_a_400_and_the_next_click_still_works(fake_ls, change, field):
    client = app_client()
    assert client.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    response = client.post("/setup", json={**setup_body(fake_ls.url), **change})
    assert response.status_code == 400, response.json
    assert response.json["error"] in ("bad_request", "bad_url") and response.json["fix"]
    assert field in response.json["message"]
    assert client.post("/predict", json=CLICK).status_code == 200


def test_a_lone_surrogate_in_setup_is_a_400(fake_ls):
    client = app_client()
    assert client.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    raw = json.dumps(setup_body(fake_ls.url)).replace(fake_ls.url, "http://a\\ud800b")
    response = client.post("/setup", data=raw, content_type="application/json")
    assert response.status_code == 400 and response.json["error"] == "bad_request"
    assert client.post("/predict", json=CLICK).status_code == 200


def test_a_bad_setup_before_any_good_one_leaves_the_address_unknown_not_broken(fake_ls):
    client = app_client()
    assert client.post("/setup", json=setup_body(":99999")).status_code == 400
    before = client.post("/predict", json=CLICK)
    assert before.status_code == 424 and before.json["error"] == "label_studio_url_missing"
    assert client.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    assert client.post("/predict", json=CLICK).status_code == 200


# ---- what /setup said reaches every process ---------------------------------------------------


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"workers": 1}, ["no /setup has reached this process"]),
        ({"workers": 2}, ["WORKERS=2", "cannot share it"]),
        ({"workers": 2, "redis_url": "shared"}, ["no /setup has reached any process"]),
        ({"workers": 2, "redis_url": "redis://127.0.0.1:1/0"}, ["Redis", "unreachable"]),
    ],
)
def test_unknown_ls_address_says_what_is_missing(shared_redis, settings, words):
    if settings.get("redis_url") == "shared":
        settings = {**settings, "redis_url": shared_redis.url}
    response = app_client(**settings).post("/predict", json=CLICK)
    assert response.status_code == 424 and response.json["error"] == "label_studio_url_missing"
    assert all(word in response.json["message"] for word in words), response.json["message"]
    assert "LABEL_STUDIO_URL" in response.json["fix"]


def test_health_says_label_studio_url_is_required_with_workers_and_no_redis(redis_server):
    (warning,) = other_warnings(app_client(workers=2))
    assert "LABEL_STUDIO_URL is required with WORKERS=2" in warning
    assert other_warnings(app_client(workers=2, redis_url=redis_server.url)) == []
    assert other_warnings(app_client(workers=1)) == []


def test_setup_is_shared_through_redis_as_json_with_a_ttl(fake_ls, shared_redis):
    """What an RQ worker builds (build_backend) learns the address and token /setup gave a web worker."""
    settings = Settings(sam_engine="grabcut", redis_url=shared_redis.url)
    web = create_app(settings).test_client()
    assert web.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    raw = shared_redis.client().get(SETUP_KEY)
    assert json.loads(raw) == {"hostname": fake_ls.url, "access_token": LS_TOKEN}  # JSON, not pickle
    assert 0 < shared_redis.client().ttl(SETUP_KEY) <= SETUP_TTL_S

    _, images = build_backend(settings)  # another process: it never saw the /setup
    ref = images.resolve({"id": 1, "data": {"image": "/data/upload/1/cd422a2f-up0.png"}}, "image")
    assert ref.url == fake_ls.url + "/data/upload/1/cd422a2f-up0.png"
    assert images.load(ref).shape == (240, 320, 3)  # fetched with the shared token


@pytest.mark.parametrize(
    "stored", [b'{"hostname": ":99999", "access_token": "x"}', b"\x80\x04\x95 not json", b"[]", b"[" * 100_000]
)  # deeper than json's recursion limit
def test_a_malformed_shared_value_is_ignored_not_a_500(shared_redis, stored):
    shared_redis.client().set(SETUP_KEY, stored)
    response = app_client(redis_url=shared_redis.url).post("/predict", json=CLICK)
    assert response.status_code == 424 and response.json["error"] == "label_studio_url_missing"


def test_nothing_of_setup_is_stored_when_the_environment_names_ls_and_its_key(fake_ls, shared_redis):
    client = app_client(label_studio_url=fake_ls.url, label_studio_api_key=LS_TOKEN, redis_url=shared_redis.url)
    assert client.post("/setup", json=setup_body(fake_ls.url)).status_code == 200
    assert shared_redis.client().get(SETUP_KEY) is None


def test_two_gunicorn_workers_both_know_what_setup_said(fake_ls, shared_redis, start_backend):
    """WORKERS=2, no LABEL_STUDIO_URL: /setup reaches one worker, and every click on either one works
    (without sharing, the worker that missed /setup answered 424, 1 click in 6 in the field)."""
    # THREADS=6: 4 cold slots per worker (backend.interactive.cold_slots), so 4 concurrent clicks never get a 503
    backend = start_backend({"SAM_ENGINE": "grabcut", "WORKERS": "2", "THREADS": "6", "REDIS_URL": shared_redis.url})
    assert backend.post("/setup", setup_body(fake_ls.url)).status_code == 200
    statuses: list[int] = []
    with ThreadPoolExecutor(4) as pool:  # concurrent clicks spread over both workers
        for _ in range(5):  # bounded: 60 clicks at most
            statuses += [r.status_code for r in pool.map(lambda _: backend.post("/predict", CLICK), range(12))]
            if len(answering_pids(backend.log())) == 2:
                break
    assert len(answering_pids(backend.log())) == 2, "the clicks never reached the second worker"
    assert statuses and set(statuses) == {200}, f"{statuses.count(200)} of {len(statuses)} clicks worked"


# ---- versions -----------------------------------------------------------------------------------


def test_versions_and_click_versions_with_auto_annotate_on_predict(fake_ls):
    """/setup and /versions report the automatic-mask version (LS skips tasks predicted by it);
    a click's answer carries the interactive engine's own."""
    client = app_client(label_studio_url=fake_ls.url, label_studio_api_key=LS_TOKEN, auto_annotate_on_predict=True)
    amg_version = client.post("/setup", json=setup_body(fake_ls.url)).json["model_version"]
    assert amg_version.startswith("grabcut-opencv-amg-")
    assert client.get("/versions").json == {"versions": [amg_version]}
    (prediction,) = client.post("/predict", json=CLICK).json["results"]
    assert prediction["model_version"] == "grabcut-opencv" and prediction["result"]


def test_versions_without_auto_annotate_is_the_engine_version():
    assert app_client().get("/versions").json == {"versions": ["grabcut-opencv"]}
