"""Data Manager -> "Retrieve predictions" over several tasks, through a real Label Studio.

LS 1.23 runs the action synchronously: it calls /health and /setup, then one /predict with
every selected task that has no prediction of the backend's current model_version, and
stores what the answer holds per task (ml/models.py `_get_predictions_from_ml_backend`: a
dict with "result" is stored, even an empty one; a list holds several, and an empty list
none). Without a prompt our backend answers at once with `[]` per task, so LS stores nothing
(no "0.00%" prediction tab, no Data Manager count), and warms each task's image embedding in
the background, so the annotator's first click is a cache hit. One task whose image is
missing must neither fail the action nor stop the others' warm-up.
"""

from __future__ import annotations

import pytest

from tests.integration.support import BRUSH_CONFIG, IMAGES, backend_env, image_bytes, keypoint
from tests.support.masks import brush_mask
from tests.support.servers import Backend
from tests.support.waiting import wait_for

NAMES = ["upload0.png", "upload1.png", "upload2.png"]


@pytest.fixture(scope="module")
def batch_project(label_studio, sam_backend) -> dict:
    ls = label_studio
    project = ls.create_project("batch", BRUSH_CONFIG)
    good = ls.upload_images(project, {name: image_bytes(name) for name in NAMES})
    (broken,) = ls.import_tasks(project, [{"image": f"/data/upload/{project}/no-such-file.png"}])
    ml = ls.connect_ml(project, sam_backend.url)
    assert ml["state"] == "CO", ml
    return {"project": project, "good": good, "broken": broken, "ml": ml["id"], "model_version": ml["model_version"]}


def test_retrieve_predictions_stores_nothing_and_warms_the_cache(label_studio, sam_backend, batch_project):
    ls, p = label_studio, batch_project
    tasks = p["good"] + [p["broken"]]
    warmed_ok = sam_backend.metric("sam_warmup_done_total", ok="true")
    warmed_failed = sam_backend.metric("sam_warmup_done_total", ok="false")
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")
    log_before = len(ls.log_tail(10**9))

    answer = ls.retrieve_predictions(p["project"], tasks)
    assert answer["processed_items"] == len(tasks), answer
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 1  # one batch call

    # No prompt and AUTO_ANNOTATE_ON_PREDICT off (the default): nothing to show, and LS stores
    # nothing (it once stored an empty prediction per task: a "0.00%" tab for annotators).
    assert_no_predictions(ls, p["project"], tasks)
    assert "incorrect" not in ls.log_tail(10**9)[log_before:]  # LS took the answer as well-formed

    # Every good image was warmed in the background; the missing one failed alone.
    wait_for(
        lambda: (
            sam_backend.metric("sam_warmup_done_total", ok="true") >= warmed_ok + len(p["good"])
            and sam_backend.metric("sam_warmup_done_total", ok="false") >= warmed_failed + 1
        ),
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

    # Retrieving again asks again (no task holds a prediction) and still stores nothing.
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")
    ls.retrieve_predictions(p["project"], tasks)
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 1
    assert_no_predictions(ls, p["project"], tasks)


def assert_no_predictions(ls, project: int, tasks: list[int]) -> None:
    """What annotators and the Data Manager see: no prediction on any task, none counted.

    Not through ls.task(): opening a task without a prediction makes LS ask the backend again."""
    for task_id in tasks:
        assert ls.predictions(task_id) == []
    listed = ls.get(f"/api/tasks?project={project}&page_size=100")  # the Data Manager's table
    rows = listed["tasks"] if isinstance(listed, dict) else listed
    assert {t["id"]: t["total_predictions"] for t in rows if t["id"] in tasks} == dict.fromkeys(tasks, 0)
    assert ls.get(f"/api/projects/{project}/")["total_predictions_number"] == 0


def test_model_page_lists_the_version_without_asking_for_an_upgrade(label_studio, batch_project):
    """LS 1.23's model page asks GET /versions; a 404 made it answer "Upgrade your ML backend version
    to latest." (ml/api.py MLBackendVersionsAPI)."""
    answer = label_studio.get(f"/api/ml/{batch_project['ml']}/versions")
    assert answer == {"versions": [batch_project["model_version"]]}


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
    without one is opened (tasks/api.py); our answer holds none, so LS stores none, and the image is
    encoded in the background, so the annotator's first click on it finds the embedding ready."""
    ls = label_studio
    project = ls.create_project("open a task", BRUSH_CONFIG)
    (task_id,) = ls.upload_images(project, {"upload1.png": image_bytes("upload1.png")})
    ml = ls.connect_ml(project, sam_backend.url)
    warmed = sam_backend.metric("sam_warmup_done_total", ok="true")
    predicts = sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx")

    opened = ls.task(task_id)  # what the labeling UI loads
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 1
    assert opened["predictions"] == []
    wait_for(lambda: sam_backend.metric("sam_warmup_done_total", ok="true") >= warmed + 1, 90, "the warm-up")

    computed = sam_backend.metric("sam_embedding_cache_total", level="computed", source="click")
    h, w = IMAGES["upload1.png"].shape[:2]
    answer = ls.interactive(ml["id"], task_id, {"result": [keypoint(50, 50, (w, h))]})
    assert "errors" not in answer, answer
    assert sam_backend.metric("sam_embedding_cache_total", level="computed", source="click") == computed
    ls.task(task_id)  # opened again: LS asks again (the task has no prediction), the cache is warm
    assert sam_backend.metric("sam_requests_total", route="/predict", outcome="2xx") == predicts + 3  # + the click
    assert sam_backend.metric("sam_warmup_done_total", ok="true") == warmed + 1  # nothing queued again
    assert_no_predictions(ls, project, [task_id])


@pytest.fixture(scope="module")
def amg_on_predict_backend(label_studio, redis_server, backends, tmp_path_factory):
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
    assert ls.get(f"/api/ml/{ml['id']}/versions") == {"versions": [ml["model_version"]]}

    # A click is the interactive model's answer, not an automatic-mask one: it carries that version.
    h, w = IMAGES[NAMES[0]].shape[:2]
    answer = ls.interactive(ml["id"], tasks[0], {"result": [keypoint(30, 40, (w, h))]})
    assert "errors" not in answer, answer
    assert answer["data"]["model_version"] == "grabcut-opencv" != ml["model_version"]
