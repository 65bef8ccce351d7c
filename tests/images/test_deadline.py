"""DOWNLOAD_DEADLINE_S bounds a whole download, not each read: servers that trickle one byte every
0.2 s (headers, body, chunked body; behind redirects; as the LS presign endpoint) are cut off
at the deadline with a 504 that names the URL without its secrets."""

from __future__ import annotations

import time

import pytest

from backend.errors import DownloadTimeout
from backend.images import ImageFetcher, resolve_image_ref
from backend.labelstudio.client import LabelStudioClient
from backend.net.transport import download_deadline
from tests.support.raw_http import TrickleServer

DEADLINE = 1.0
SLACK = 0.5  # scheduling noise on a busy machine; the trickles would run for 20 s


@pytest.fixture
def trickle(request):
    servers = []

    def make(mode: str) -> TrickleServer:
        servers.append(TrickleServer(mode, interval=0.2, limit=100))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def timed_fetch(ls_url: str, value: str, task_id: int = 1) -> tuple[DownloadTimeout, float]:
    # FETCH_TIMEOUT_S (per read) far above the deadline: only the deadline can end these downloads.
    client = LabelStudioClient(ls_url, api_key="secret-key", timeout=10)
    fetcher = ImageFetcher(client, allow_private_image_urls=True, timeout=10, deadline_s=DEADLINE)
    ref = resolve_image_ref({"id": task_id, "data": {"image": value}}, "image", ls_base_url=ls_url)
    start = time.monotonic()
    with pytest.raises(DownloadTimeout) as err:
        fetcher.fetch(ref)
    return err.value, time.monotonic() - start


@pytest.mark.parametrize("mode", ["headers", "body", "chunked"])
def test_trickling_image_host_is_cut_off_at_the_deadline(ls, trickle, mode):
    server = trickle(mode)
    err, took = timed_fetch(ls.url, server.url + "/a.png?X-Amz-Signature=s3cr3t&v=1")
    assert DEADLINE - 0.05 <= took < DEADLINE + SLACK
    assert err.status == 504 and err.code == "image_download_timeout" and err.retryable
    assert f"127.0.0.1:{server.port}/a.png" in err.message and "s3cr3t" not in err.message
    assert "DOWNLOAD_DEADLINE_S" in err.message + err.fix


@pytest.mark.parametrize("mode", ["headers", "body"])
def test_trickling_ls_upload_is_cut_off_at_the_deadline(trickle, mode):
    server = trickle(mode)  # plays Label Studio itself
    err, took = timed_fetch(server.url, "/data/upload/1/a.png")
    assert took < DEADLINE + SLACK and err.status == 504 and "/data/upload/1/a.png" in err.message


def test_deadline_covers_every_redirect_hop(ls, trickle):
    server = trickle("body")
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/hop/1"})
    ls.serve("/hop/1", status=302, headers={"Location": server.url + "/a.png"})
    err, took = timed_fetch(ls.url, "/data/upload/1/a.png")
    assert took < DEADLINE + SLACK and err.status == 504


def test_slow_hops_add_up_to_the_deadline(ls):
    def slow_redirect(req):  # each hop well inside FETCH_TIMEOUT_S, together past the deadline
        time.sleep(0.3)
        return 302, {"Location": "/data/upload/slow"}, b""

    ls.routes["/data/upload/slow"] = slow_redirect
    err, took = timed_fetch(ls.url, "/data/upload/slow")
    assert took < DEADLINE + SLACK and err.status == 504


def test_deadline_covers_the_presign_call(trickle):
    server = trickle("headers")  # LS's presign endpoint answers slowly
    err, took = timed_fetch(server.url, "s3://bucket/a.png", task_id=7)
    assert took < DEADLINE + SLACK and err.status == 504 and "s3://bucket/a.png" in err.message


def test_fast_download_under_the_deadline_is_untouched(ls, png):
    ls.serve("/data/upload/1/a.png", png)
    fetcher = ImageFetcher(LabelStudioClient(ls.url, api_key="k"), deadline_s=DEADLINE)
    ref = resolve_image_ref({"id": 1, "data": {"image": "/data/upload/1/a.png"}}, "image", ls_base_url=ls.url)
    for _ in range(3):  # pooled connections keep working across downloads
        assert fetcher.fetch(ref) == png


def test_no_deadline_outside_a_download(ls):
    """LS API calls (auto-annotate jobs) keep only FETCH_TIMEOUT_S; an enclosing deadline that ends
    sooner wins over a later one."""

    def slow(req):
        time.sleep(0.3)
        return 200, {"Content-Type": "application/json"}, b'{"id": 1}'

    ls.routes["/api/tasks/1/"] = slow
    client = LabelStudioClient(ls.url, api_key="k", timeout=5)
    assert client.get_task(1) == {"id": 1}
    with download_deadline(0.1), download_deadline(30), pytest.raises(Exception, match="timed out"):
        client.get_task(1)
