"""LabelStudioClient against a real local HTTP server playing Label Studio."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from backend.labelstudio.client import LabelStudioAuthError, LabelStudioClient, LabelStudioError, jwt_claims
from tests.support.fake_http import requires_token
from tests.support.ls_tokens import jwt, make_pat

LEGACY = "harnesstoken0123456789abcdef0123456789ab"  # the shape LS sends in /setup


def ok_json(obj) -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def test_legacy_token_sent_as_token_header(ls):
    ls.routes["/api/tasks/7/"] = requires_token(f"Token {LEGACY}", lambda r: ok_json({"id": 7, "data": {}}))
    assert LabelStudioClient(ls.url, api_key=LEGACY).get_task(7)["id"] == 7


def test_setup_access_token_used_when_no_api_key(ls):
    ls.routes["/api/tasks/7/"] = requires_token(f"Token {LEGACY}", lambda r: ok_json({"id": 7}))
    assert LabelStudioClient(ls.url, access_token=LEGACY).get_task(7) == {"id": 7}


def test_api_key_wins_over_setup_token(ls):
    ls.routes["/api/tasks/7/"] = requires_token("Token the-key", lambda r: ok_json({"id": 7}))
    assert LabelStudioClient(ls.url, api_key="the-key", access_token=LEGACY).get_task(7) == {"id": 7}


def test_jwt_shape_detection():
    assert jwt_claims(make_pat())["token_type"] == "refresh"
    assert jwt_claims(LEGACY) is None
    assert jwt_claims("a.b.c") is None  # three parts but no JSON payload


class FakeTokenService:
    """LS's /api/token/refresh/: hands out numbered access JWTs; can revoke the current one."""

    def __init__(self, pat: str, access_ttl: float = 300):
        self.pat, self.ttl, self.issued, self.revoked = pat, access_ttl, [], set()

    def refresh(self, req):
        if json.loads(req.body).get("refresh") != self.pat:
            return 401, {}, b'{"detail": "Token is invalid or expired"}'
        token = jwt({"token_type": "access", "exp": int(time.time() + self.ttl), "n": len(self.issued)})
        self.issued.append(token)
        return ok_json({"access": token})

    def guard(self, reply):
        def route(req):
            auth = req.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.issued or auth[7:] in self.revoked:
                return 401, {}, b'{"detail": "Given token not valid for any token type"}'
            return reply(req)

        return route


def test_personal_access_token_is_exchanged_and_reused(ls):
    pat = make_pat()
    svc = FakeTokenService(pat)
    ls.routes["/api/token/refresh/"] = svc.refresh
    ls.routes["/api/tasks/1/"] = svc.guard(lambda r: ok_json({"id": 1}))
    client = LabelStudioClient(ls.url, api_key=pat)
    client.get_task(1)
    client.get_task(1)
    assert len(svc.issued) == 1
    assert [r.headers.get("Authorization") for r in ls.seen if r.path == "/api/tasks/1/"] == [
        f"Bearer {svc.issued[0]}"
    ] * 2
    assert all(pat not in (r.headers.get("Authorization") or "") for r in ls.seen)  # the PAT itself is never a header


def test_expired_access_token_is_refreshed_before_use(ls):
    pat = make_pat()
    svc = FakeTokenService(pat, access_ttl=5)  # inside the 30 s refresh margin: always stale
    ls.routes["/api/token/refresh/"] = svc.refresh
    ls.routes["/api/tasks/1/"] = svc.guard(lambda r: ok_json({"id": 1}))
    client = LabelStudioClient(ls.url, api_key=pat)
    client.get_task(1)
    client.get_task(1)
    assert len(svc.issued) == 2


def test_revoked_access_token_refreshed_once_on_401(ls):
    pat = make_pat()
    svc = FakeTokenService(pat)
    ls.routes["/api/token/refresh/"] = svc.refresh
    ls.routes["/api/tasks/1/"] = svc.guard(lambda r: ok_json({"id": 1}))
    client = LabelStudioClient(ls.url, api_key=pat)
    client.get_task(1)
    svc.revoked.add(svc.issued[0])
    assert client.get_task(1) == {"id": 1}
    assert len(svc.issued) == 2
    svc.revoked.update(svc.issued)
    svc.refresh = lambda req: ok_json({"access": svc.issued[-1]})  # LS keeps handing out a dead token
    ls.routes["/api/token/refresh/"] = svc.refresh
    with pytest.raises(LabelStudioAuthError):  # one retry only, then a clear error
        client.get_task(1)


def test_rejected_personal_access_token(ls):
    ls.routes["/api/token/refresh/"] = FakeTokenService(make_pat()).refresh  # knows another PAT
    with pytest.raises(LabelStudioAuthError) as err:
        LabelStudioClient(ls.url, api_key=make_pat(jti="another")).get_task(1)
    assert err.value.status == 424 and "api/token/refresh" in err.value.message
    assert "LABEL_STUDIO_API_KEY" in err.value.fix


def test_personal_access_token_on_ls_without_refresh_endpoint(ls):
    with pytest.raises(LabelStudioAuthError) as err:
        LabelStudioClient(ls.url, api_key=make_pat()).get_task(1)
    assert "legacy token" in err.value.fix and not err.value.retryable


def test_expired_personal_access_token_fails_without_a_request(ls):
    with pytest.raises(LabelStudioAuthError, match="expired"):
        LabelStudioClient(ls.url, api_key=make_pat(exp_in=-10)).get_task(1)
    assert ls.seen == []


def test_401_names_url_and_fix_without_the_token(ls):
    ls.routes["/api/tasks/3/"] = requires_token("Token right", lambda r: ok_json({}))
    with pytest.raises(LabelStudioAuthError) as err:
        LabelStudioClient(ls.url, api_key="wrong-token").get_task(3)
    assert f"{ls.url}/api/tasks/3/" in err.value.message and "401" in err.value.message
    assert "LABEL_STUDIO_API_KEY" in err.value.fix and "Access" in err.value.fix
    assert "wrong-token" not in err.value.message + err.value.fix


def test_redirect_to_login_page_is_an_auth_error(ls):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": "/user/login/?next=/data/upload/1/a.png"})
    with pytest.raises(LabelStudioAuthError, match="login"):
        LabelStudioClient(ls.url, api_key="x").open("GET", "/data/upload/1/a.png")
    assert [r.path for r in ls.seen] == ["/data/upload/1/a.png"]  # the login page itself is never asked


def test_token_never_logged(ls, caplog):
    pat = make_pat()
    svc = FakeTokenService(pat)
    ls.routes["/api/token/refresh/"] = svc.refresh
    ls.routes["/api/tasks/1/"] = svc.guard(lambda r: ok_json({"id": 1}))
    with caplog.at_level(logging.DEBUG):
        LabelStudioClient(ls.url, api_key=pat).get_task(1)
    assert caplog.records, "urllib3/our debug logs should have been captured"
    assert pat not in caplog.text and svc.issued[0] not in caplog.text


def test_refuses_urls_off_the_ls_host(ls, ext):
    client = LabelStudioClient(ls.url, api_key="k")
    with pytest.raises(ValueError):
        client.get(ext.url + "/x.png")
    assert ext.seen == []


def test_paths_always_stay_on_the_ls_host(ls):
    client = LabelStudioClient(ls.url, api_key="k")
    local = "/data/local-files/?d=http://evil/x.png"
    assert client.target(local).url == ls.url + local
    assert client.target("//evil.example/x").url == ls.url + "/evil.example/x"
    assert client.target(ls.url.replace("http", "HTTP") + "/a").url == ls.url + "/a"


def test_foreign_redirect_is_returned_not_followed(ls, ext):
    ls.serve("/data/upload/1/a.png", status=302, headers={"Location": ext.url + "/a.png"})
    resp = LabelStudioClient(ls.url, api_key="k").open("GET", "/data/upload/1/a.png")
    assert resp.status_code == 302 and ext.seen == []


def test_presign_url_encodes_the_uri_as_ls_decodes_it(ls):
    uri = "s3://bucket/dir/im age+1.jpg"
    url = LabelStudioClient(ls.url, api_key="k").presign_url(5, uri)
    assert url.url.startswith(ls.url + "/tasks/5/presign/?fileuri=")
    fileuri = url.target.partition("fileuri=")[2]
    assert base64.urlsafe_b64decode(fileuri).decode() == uri


def test_list_tasks_pages_through_everything(ls):
    tasks = [{"id": i} for i in range(1, 8)]

    def page(req):
        n, size = int(req.query["page"][0]), int(req.query["page_size"][0])
        assert req.query["project"] == ["3"]
        chunk = tasks[(n - 1) * size : n * size]
        return (404, {}, b"") if not chunk else ok_json({"tasks": chunk, "total": len(tasks)})

    ls.routes["/api/tasks/"] = page
    assert [t["id"] for t in LabelStudioClient(ls.url, api_key="k").list_tasks(3, page_size=3)] == list(range(1, 8))
    assert len([r for r in ls.seen if r.path == "/api/tasks/"]) == 3


def test_predictions_create_list_delete(ls):
    store = {}

    def predictions(req):
        if req.method == "POST":
            body = json.loads(req.body)
            store[len(store) + 1] = body
            return 201, {"Content-Type": "application/json"}, json.dumps({"id": len(store), **body}).encode()
        task = int(req.query["task"][0])
        return ok_json([{"id": i, **p} for i, p in store.items() if p["task"] == task])

    ls.routes["/api/predictions/"] = requires_token("Token k", predictions)
    ls.routes["/api/predictions/1/"] = requires_token("Token k", lambda r: (204, {}, b""))
    client = LabelStudioClient(ls.url, api_key="k")
    created = client.create_prediction(4, [{"type": "brushlabels"}], 0.9, "sam-vit_b")
    assert created["id"] == 1 and store[1] == {
        "task": 4,
        "result": [{"type": "brushlabels"}],
        "model_version": "sam-vit_b",
        "score": 0.9,
    }
    assert [p["id"] for p in client.list_predictions(4)] == [1]
    assert client.list_predictions(5) == []
    client.delete_prediction(1)
    client.delete_prediction(2)  # 404: already gone is fine
    assert [r.method for r in ls.seen][-2:] == ["DELETE", "DELETE"]


def test_unreachable_ls_names_url_and_fix(ls):
    url = ls.url
    ls.close()
    with pytest.raises(LabelStudioError) as err:
        LabelStudioClient(url, api_key="k", timeout=2).get_task(1)
    assert url in err.value.message and "LABEL_STUDIO_URL" in err.value.fix and err.value.retryable
