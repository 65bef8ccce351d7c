"""Data Manager -> "Retrieve predictions" over several tasks, through a real Label Studio.

LS 1.23 runs the action synchronously: it calls /health and /setup, then one /predict with
every selected task that has no prediction of the backend's current model_version, and
stores one prediction per task from the answer (ml/models.py predict_tasks). Without a
prompt our backend answers at once with an empty prediction per task and warms each task's
image embedding in the background, so the annotator's first click is a cache hit. One task
whose image is missing must neither fail the action nor stop the others' warm-up.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import BRUSH_CONFIG
from tests.integration.support import IMAGES, brush_mask, image_bytes, keypoint

NAMES = ["upload0.png", "upload1.png", "upload2.png"]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def batch_project(label_studio, sam_backend) -> dict:
    ls = label_studio
    project = ls.create_project("batch", BRUSH_CONFIG)
    good = ls.upload_images(project, {name: image_bytes(name) for name in NAMES})
    (broken,) = ls.import_tasks(project, [{"image": f"/data/upload/{project}/no-such-file.png"}])
    ml = ls.connect_ml(project, sam_backend.url)
    assert ml["state"] == "CO", ml
    return {"project": project, "good": good, "broken": broken, "ml": ml["id"], "model_version": ml["model_version"]}


def test_retrieve_predictions_stores_one_per_task_and_warms_the_cache(label_studio, sam_backend, batch_project):
    ls, p = label_studio, batch_project
    tasks = p["good"] + [p["broken"]]
    warmed_ok = sam_backend.metric("sam_warmup_done_total", ok="true")
    warmed_failed = sam_backend.metric("sam_warmup_done_total", ok="false")
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")

    answer = ls.retrieve_predictions(p["project"], tasks)
    assert answer["processed_items"] == len(tasks), answer
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 1  # one batch call

    for task_id in tasks:
        stored = ls.predictions(task_id)
        assert len(stored) == 1, stored
        (prediction,) = stored
        assert prediction["model_version"] == p["model_version"]
        # No prompt and AUTO_ANNOTATE_ON_PREDICT off (the default): nothing is drawn yet, and LS
        # stores what it got, an empty result. (See the report: LS keeps this empty prediction.)
        assert prediction["result"] == []
        assert ls.task(task_id)["total_predictions"] == 1

    # Every good image was warmed in the background; the missing one failed alone.
    wait_for(
        lambda: sam_backend.metric("sam_warmup_done_total", ok="true") >= warmed_ok + len(p["good"])
        and sam_backend.metric("sam_warmup_done_total", ok="false") >= warmed_failed + 1,
        90,
        "the warm-up of 3 good images and 1 missing one",
    )
    assert sam_backend.metric("sam_warmup_done_total", ok="false") == warmed_failed + 1

    # The annotator's first click on a warmed task computes nothing.
    computed = sam_backend.metric("sam_embedding_cache_total", level="computed", source="click")
    h, w = IMAGES["upload2.png"].shape[:2]
    answer = ls.interactive(p["ml"], p["good"][2], {"result": [keypoint(35, 60, (w, h))]})
    assert "errors" not in answer, answer
    assert brush_mask(answer["data"]["result"][0]).shape == (h, w)
    assert sam_backend.metric("sam_embedding_cache_total", level="computed", source="click") == computed

    # Retrieving again adds nothing: LS skips tasks holding a prediction of this model_version.
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")
    ls.retrieve_predictions(p["project"], tasks)
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts
    assert [len(ls.predictions(t)) for t in tasks] == [1] * len(tasks)


def test_a_click_on_the_missing_image_fails_with_the_status_only(label_studio, batch_project):
    """LS 1.23 relays a failed /predict to the UI as `str(requests.HTTPError)` (ml/api_connector.py):
    the status and reason phrase reach the annotator, our JSON error body (message, fix) does not."""
    answer = label_studio.interactive(
        batch_project["ml"], batch_project["broken"], {"result": [keypoint(50, 50, (320, 240))]}
    )
    assert "data" not in answer, answer
    (message,) = answer["errors"]
    assert message.startswith("424 Client Error") and message.endswith("/predict"), message


def test_opening_a_task_warms_its_embedding(label_studio, sam_backend):
    """LS 1.23 (show_collab_predictions, on by default) asks the backend for a prediction when a task
    without one is opened (tasks/api.py); our answer is empty and the image is encoded in the
    background, so the annotator's first click on it finds the embedding ready."""
    ls = label_studio
    project = ls.create_project("open a task", BRUSH_CONFIG)
    (task_id,) = ls.upload_images(project, {"upload1.png": image_bytes("upload1.png")})
    ml = ls.connect_ml(project, sam_backend.url)
    warmed = sam_backend.metric("sam_warmup_done_total", ok="true")
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")

    opened = ls.task(task_id)  # what the labeling UI loads
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 1
    assert [(p["model_version"], p["result"]) for p in opened["predictions"]] == [(ml["model_version"], [])]
    wait_for(lambda: sam_backend.metric("sam_warmup_done_total", ok="true") >= warmed + 1, 90, "the warm-up")

    computed = sam_backend.metric("sam_embedding_cache_total", level="computed", source="click")
    h, w = IMAGES["upload1.png"].shape[:2]
    answer = ls.interactive(ml["id"], task_id, {"result": [keypoint(50, 50, (w, h))]})
    assert "errors" not in answer, answer
    assert sam_backend.metric("sam_embedding_cache_total", level="computed", source="click") == computed
    ls.task(task_id)  # opened again: it has a prediction now, so LS does not ask again
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 2  # +1: the click


@pytest.fixture(scope="module")
def amg_on_predict_backend(label_studio, redis_server, backends, tmp_path_factory):
    from tests.http.conftest import Backend
    from tests.integration.conftest import backend_env

    env = backend_env(label_studio, redis_server, SAM_ENGINE="grabcut", AUTO_ANNOTATE_ON_PREDICT="true")
    backend = Backend(env, tmp_path_factory.mktemp("amg-on-predict") / "gunicorn.log")
    backends.append(backend)
    return backend


def test_retrieving_twice_with_auto_annotate_on_predict_adds_nothing(label_studio, amg_on_predict_backend):
    """LS skips tasks holding a prediction of the model_version /setup reported, so that must be the
    version the AMG predictions carry (once it was not, and every Retrieve predictions added one more).
    GrabCut cannot run AMG, so the predictions are empty; the versions are what is checked."""
    ls = label_studio
    project = ls.create_project("amg on predict", BRUSH_CONFIG)
    tasks = ls.upload_images(project, {name: image_bytes(name) for name in NAMES[:2]})
    ml = ls.connect_ml(project, amg_on_predict_backend.url)
    ls.retrieve_predictions(project, tasks)
    first = {t: ls.predictions(t) for t in tasks}
    assert [len(p) for p in first.values()] == [1, 1], first
    ls.retrieve_predictions(project, tasks)
    assert [len(ls.predictions(t)) for t in tasks] == [1, 1]
    assert {p[0]["model_version"] for p in first.values()} == {ml["model_version"]}
