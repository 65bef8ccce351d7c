"""Auto-annotate runs end to end: POST /auto-annotate -> RQ -> real worker processes -> LS API.

Real redis-server, real `python -m backend worker` subprocesses running the tiny random-weight
SAM, and a fake Label Studio (a real HTTP server) that stores predictions, so duplicates,
failures and retries are visible in what "LS" ends up holding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from backend.settings import Settings
from backend.web.app import create_app
from tests.support.fake_ls import FakeLabelStudioAPI
from tests.support.images import png, scene
from tests.support.label_configs import BRUSH_WITH_SMART_KEYPOINTS
from tests.support.samples import LS_TOKEN
from tests.support.servers import REPO
from tests.support.worker_pool import Workers

# Random weights: keep every candidate so each task gets regions (see DESIGN.md on degenerate AMG).
OPTIONS = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "max_masks": 3}
TASKS = [1, 2, 3, 4]


@pytest.fixture()
def ls():
    api = FakeLabelStudioAPI(BRUSH_WITH_SMART_KEYPOINTS, token=LS_TOKEN)
    for task_id in TASKS:
        api.add_file(f"/data/upload/1/t{task_id}.png", png(scene(96, 64, [(0.5, 0.5, 0.3)], seed=task_id)))
        api.add_task(task_id, {"image": f"/data/upload/1/t{task_id}.png"})
    yield api
    api.close()


@pytest.fixture()
def env(ls, redis_server, tiny_checkpoint, tmp_path):
    return {
        "REDIS_URL": redis_server.url,
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": LS_TOKEN,
        "SAM_ENGINE": "sam",
        "SAM_MODEL": "tiny",
        "SAM_CHECKPOINT": str(tiny_checkpoint),
        "RQ_QUEUE": f"test-{tmp_path.name}",
        "JOB_RETRIES": "3",
        "ALLOW_PRIVATE_IMAGE_URLS": "true",
    }


@pytest.fixture()
def workers(env, tmp_path):
    pool = Workers(env, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture()
def client(env):
    settings = Settings.from_env({**env})
    return create_app(settings).test_client()


def start_run(client, tasks="all", **options) -> str:
    response = client.post("/auto-annotate", json={"project": 1, "tasks": tasks, "options": {**OPTIONS, **options}})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["run_id"]


def wait_finished(client, run_id: str, workers: Workers, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/auto-annotate/{run_id}").get_json()
        if status["state"] in ("finished", "finished_with_errors", "failed"):
            return status
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish: {status}\n{workers.logs()}")


def predictions_per_task(ls: FakeLabelStudioAPI) -> dict[int, int]:
    counts = {task_id: 0 for task_id in ls.tasks}
    for prediction in ls.predictions.values():
        counts[prediction["task"]] += 1
    return counts


def test_a_run_over_all_tasks_posts_one_prediction_each_and_a_redo_replaces_them(client, ls, workers):
    workers.start()
    status = wait_finished(client, start_run(client), workers)
    assert status["state"] == "finished", status
    assert (status["total"], status["done"], status["failed"]) == (len(TASKS), len(TASKS), 0)
    assert status["done"] == ls.count("POST", "/api/predictions/"), "progress must match what LS received"
    assert status["timings"]["task_mean_s"] > 0
    assert all(ls.count("GET", f"/data/upload/1/t{t}.png") == 1 for t in TASKS), "a cold task fetches its image once"
    assert predictions_per_task(ls) == {t: 1 for t in TASKS}
    first = {p["task"]: p for p in ls.predictions.values()}
    for prediction in first.values():
        assert prediction["model_version"].startswith("sam-tiny-") and "-amg-fast-" in prediction["model_version"]
        assert 1 <= len(prediction["result"]) <= OPTIONS["max_masks"]
        assert {r["type"] for r in prediction["result"]} == {"brushlabels"}
        areas = [np.count_nonzero(_decode(r)) for r in prediction["result"]]
        assert areas == sorted(areas, reverse=True)  # largest first

    status = wait_finished(client, start_run(client, tasks=TASKS, redo=True), workers)
    assert status["state"] == "finished"
    assert predictions_per_task(ls) == {t: 1 for t in TASKS}, "a rerun must replace, not duplicate"
    assert client.get("/auto-annotate/no-such-run").status_code == 404
    assert {p["id"] for p in ls.predictions.values()}.isdisjoint(p["id"] for p in first.values())


def test_a_run_started_again_does_only_the_tasks_not_done(client, ls, workers):
    """Resuming: a run stopped halfway (here: task 3's prediction never arrived) and started
    again with the same settings labels only what is missing."""
    workers.start()
    assert wait_finished(client, start_run(client), workers)["state"] == "finished"
    done = {p["task"]: p["id"] for p in ls.predictions.values()}
    del ls.predictions[done[3]]
    posts = ls.count("POST", "/api/predictions/")
    status = wait_finished(client, start_run(client), workers)
    assert (status["state"], status["done"]) == ("finished", len(TASKS))
    assert ls.count("POST", "/api/predictions/") == posts + 1  # task 3 only
    again = {p["task"]: p["id"] for p in ls.predictions.values()}
    assert sorted(again) == TASKS and all(again[t] == done[t] for t in TASKS if t != 3)
    other = wait_finished(client, start_run(client, max_masks=2), workers)  # other settings: another prediction
    assert other["state"] == "finished" and predictions_per_task(ls) == {t: 2 for t in TASKS}


def _decode(region: dict) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    flat = decode_rle(region["value"]["rle"])
    return flat.reshape(region["original_height"], region["original_width"], 4)[:, :, 3] > 0


def test_a_task_whose_image_is_gone_fails_alone_with_its_reason(client, ls, workers):
    ls.add_task(5, {"image": "/data/upload/1/missing.png"})
    workers.start()
    status = wait_finished(client, start_run(client, tasks=[1, 5, 2]), workers)
    assert status["state"] == "finished_with_errors"
    assert (status["total"], status["done"], status["failed"]) == (3, 2, 1)
    assert status["errors"][0]["task"] == 5 and "404" in status["errors"][0]["error"]
    assert predictions_per_task(ls) == {1: 1, 2: 1, 3: 0, 4: 0, 5: 0}


def test_a_worker_killed_mid_task_loses_nothing_and_duplicates_nothing(client, ls, workers):
    posted = ls.server.routes["/api/predictions/"]
    slow_once = {"done": False}

    def slow_first_post(req):
        if req.method == "POST" and not slow_once["done"]:
            slow_once["done"] = True
            time.sleep(6)  # the worker is killed while LS is still answering this POST
        return posted(req)

    ls.server.routes["/api/predictions/"] = slow_first_post
    victim = workers.start()
    run_id = start_run(client, tasks=TASKS)
    deadline = time.monotonic() + 120
    while not slow_once["done"]:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.1)
    workers.kill(victim)
    workers.start()
    status = wait_finished(client, run_id, workers)
    assert status["state"] == "finished", (status, workers.logs())
    assert (status["done"], status["failed"]) == (len(TASKS), 0)
    assert predictions_per_task(ls) == {t: 1 for t in TASKS}


def test_cli_labels_tasks_in_process_and_exits_nonzero_naming_failed_tasks(env, ls):
    ls.add_task(9, {"image": "/data/upload/1/missing.png"})
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "auto-annotate",
            "--project",
            "1",
            "--tasks",
            "1,9",
            "--local",
            "--options",
            ('{"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0}'),
        ],
        cwd=REPO,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert "1 of 2 tasks done, 1 failed" in run.stdout
    assert "task 9:" in run.stdout
    assert predictions_per_task(ls)[1] == 1
