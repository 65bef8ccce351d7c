"""Credentials in both directions against a real Label Studio 1.23.2.

- Backend -> LS: a personal access token (LS 1.23's default kind, a JWT refresh token) in
  LABEL_STUDIO_API_KEY is exchanged at /api/token/refresh/ and the access JWT fetches images.
- LS -> backend: LS's "Basic Authentication" option on the model connection reaches a backend
  started with BASIC_AUTH_USER / BASIC_AUTH_PASS; a wrong password is refused when connecting.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.integration.support import BRUSH_CONFIG, IMAGES, GrabCutReference, backend_env, image_bytes, keypoint
from tests.support.masks import brush_mask
from tests.support.servers import Backend


def one_task_project(ls, title: str) -> tuple[int, int]:
    project = ls.create_project(title, BRUSH_CONFIG)
    (task,) = ls.upload_images(project, {"upload1.png": image_bytes("upload1.png")})
    return project, task


def assert_click_matches(ls, ml_id: int, task: int) -> None:
    h, w = IMAGES["upload1.png"].shape[:2]
    click = [keypoint(50, 50, (w, h))]
    answer = ls.interactive(ml_id, task, {"result": click})
    assert "errors" not in answer, answer
    np.testing.assert_array_equal(
        brush_mask(answer["data"]["result"][0]), GrabCutReference().sequence("upload1.png", [click])[0]
    )


@pytest.fixture(scope="module")
def personal_access_token(label_studio) -> str:
    token = label_studio.post("/api/token/", {})["token"]
    assert token.count(".") == 2  # a JWT, unlike the 40-hex legacy token
    return token


def test_backend_with_a_personal_access_token_fetches_images(
    label_studio, redis_server, backends, personal_access_token, tmp_path_factory
):
    env = backend_env(label_studio, redis_server, SAM_ENGINE="grabcut", LABEL_STUDIO_API_KEY=personal_access_token)
    backend = Backend(env, tmp_path_factory.mktemp("pat") / "gunicorn.log")
    backends.append(backend)
    project, task = one_task_project(label_studio, "personal access token")
    ml = label_studio.connect_ml(project, backend.url)
    assert_click_matches(label_studio, ml["id"], task)
    # The image came from LS with a Bearer access token obtained from the PAT (not LS's /setup token).
    log = label_studio.log_tail(200_000)
    assert 'POST /api/token/refresh/ HTTP/1.1" 200' in log


def test_basic_auth_between_ls_and_the_backend(label_studio, redis_server, backends, tmp_path_factory):
    user, password = "ls", "s3cret-pass"
    env = backend_env(label_studio, redis_server, SAM_ENGINE="grabcut", BASIC_AUTH_USER=user, BASIC_AUTH_PASS=password)
    backend = Backend(env, tmp_path_factory.mktemp("basic") / "gunicorn.log", auth=(user, password))
    backends.append(backend)
    project, task = one_task_project(label_studio, "basic auth")

    body = {
        "url": backend.url,
        "project": project,
        "title": "SAM",
        "is_interactive": True,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": user,
        "basic_auth_pass": "wrong",
    }
    refused = label_studio.request("POST", "/api/ml", expect=(400,), json=body)
    assert "authentication parameters were either not provided or are incorrect" in str(refused), refused

    ml = label_studio.post("/api/ml", dict(body, basic_auth_pass=password))
    assert ml["state"] == "CO", ml
    assert_click_matches(label_studio, ml["id"], task)
