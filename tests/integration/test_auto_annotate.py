"""Auto-annotate a whole project with AMG, through RQ workers, into a real Label Studio.

A run is started over "all" tasks; a real `python -m backend worker` pages through the
project's tasks via LS's API, runs AMG (tiny SAM, random weights, thresholds at 0 so masks
survive), and posts one prediction per task. LS validates each prediction against the label
config here (its validation feature flag is forced on). A rerun must replace, not add: still
exactly one prediction per task from our model_version. A task whose image is missing fails
alone and is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sam_model.amg import AutomaticMaskGenerator
from sam_model.loading import load_sam
from sam_model.sam1.predictor import SamPredictor
from tests.integration.support import (
    BRUSH_CONFIG,
    IMAGES,
    POLYGON_CONFIG,
    assert_valid_polygon_region,
    backend_env,
    image_bytes,
    polygon_mask,
    sam_env,
)
from tests.support.masks import brush_mask
from tests.support.servers import REPO
from tests.support.torch_threads import torch_threads

NAMES = ["upload0.png", "upload1.png", "upload2.png"]
# 2x2 points: the full-size mask decoder costs ~0.5 s per point on this loaded 2-core box.
AMG_OPTIONS = {"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def make_project(ls, title: str, config: str) -> dict:
    project = ls.create_project(title, config)
    good = ls.upload_images(project, {name: image_bytes(name) for name in NAMES})
    # A task whose file is gone: LS answers /data/local-files/ for it with 404 (a missing
    # /data/upload/ file gets HTTP 500 from LS 1.23.2, which the batch test covers).
    local_dir = ls.files_root / f"auto-{project}"
    local_dir.mkdir()
    ls.add_local_storage(project, local_dir)
    (broken,) = ls.import_tasks(project, [{"image": f"/data/local-files/?d=auto-{project}/gone.png"}])
    names = {}
    for task_id in good:
        path = ls.task(task_id)["data"]["image"]
        names[task_id] = next(n for n in NAMES if path.endswith(n))
    return {"project": project, "good": good, "broken": broken, "names": names}


def wait_finished(backend, run_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = backend.get(f"/auto-annotate/{run_id}").json()
        if status["state"] not in ("queued", "running") and not status["planning"]:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"auto-annotate run {run_id} not finished after {timeout_s} s: {status}")
        time.sleep(0.5)


def ours(ls, task_id: int, prefix: str) -> list[dict]:
    return [p for p in ls.predictions(task_id) if p["model_version"].startswith(prefix)]


def run_cli(ls, redis_server, checkpoint: Path, project: int, options: dict) -> subprocess.CompletedProcess:
    """`python -m backend auto-annotate --project P --all`: enqueue on RQ and follow the run."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "REDIS", "LABEL_STUDIO"))}
    env.update(backend_env(ls, redis_server, **sam_env(checkpoint)), OMP_NUM_THREADS="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "backend",
            "auto-annotate",
            "--project",
            str(project),
            "--all",
            "--options",
            json.dumps(options),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


@pytest.fixture(scope="module")
def amg_reference(tiny_checkpoint):
    """AMG in this process with the worker's settings (one torch thread, fast mode, fp32 embedding)."""
    predictor = SamPredictor(load_sam("tiny", str(tiny_checkpoint), device="cpu"), "reference")
    generator = AutomaticMaskGenerator(predictor, output_mode="binary_mask", mode="fast", **AMG_OPTIONS)
    with torch_threads(1):
        yield generator


@pytest.fixture(scope="module")
def model_prefix(sam_backend) -> str:
    return sam_backend.get("/health").json()["model_version"] + "-amg-"


def test_cli_run_then_rerun_leaves_one_prediction_per_task(
    label_studio, redis_server, tiny_checkpoint, sam_worker, sam_backend, amg_reference, model_prefix
):
    ls = label_studio
    p = make_project(ls, "auto-annotate brush", BRUSH_CONFIG)
    options = {"output": "brush", **AMG_OPTIONS}

    done = run_cli(ls, redis_server, tiny_checkpoint, p["project"], options)
    # Exit status 1: one task failed (the missing image), and it is listed; the others are done.
    assert done.returncode == 1, (done.stdout, done.stderr, sam_worker.log()[-3000:])
    assert "3 of 4 tasks done, 1 failed" in done.stdout, done.stdout
    assert f"task {p['broken']}:" in done.stdout

    first: dict[int, dict] = {}
    for task_id in p["good"]:
        (prediction,) = ours(ls, task_id, model_prefix)
        first[task_id] = prediction
        image = IMAGES[p["names"][task_id]]
        h, w = image.shape[:2]
        expected = sorted(amg_reference.generate(image), key=lambda m: m["area"], reverse=True)
        assert prediction["result"], "AMG with thresholds at 0 keeps at least one mask"
        assert len(prediction["result"]) == len(expected)
        for region, record in zip(prediction["result"], expected, strict=True):
            assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
            assert region["value"]["brushlabels"] == ["Banana"]
            assert (region["original_width"], region["original_height"]) == (w, h)
            np.testing.assert_array_equal(brush_mask(region), record["segmentation"])
    assert ours(ls, p["broken"], model_prefix) == []

    # "redo": label the done tasks again (without it a rerun resumes: it skips them).
    again = run_cli(ls, redis_server, tiny_checkpoint, p["project"], {**options, "redo": True})
    assert again.returncode == 1, (again.stdout, again.stderr)
    for task_id in p["good"]:
        (prediction,) = ours(ls, task_id, model_prefix)  # replaced, not added
        assert prediction["model_version"] == first[task_id]["model_version"]
        assert prediction["id"] != first[task_id]["id"]
        assert [brush_mask(r).sum() for r in prediction["result"]] == [
            brush_mask(r).sum() for r in first[task_id]["result"]
        ]
        assert ls.task(task_id)["total_predictions"] == 1


def test_http_run_over_a_polygon_project_stores_valid_polygons(label_studio, sam_worker, sam_backend, model_prefix):
    ls = label_studio
    p = make_project(ls, "auto-annotate polygons", POLYGON_CONFIG)
    started = sam_backend.post(
        "/auto-annotate", {"project": p["project"], "tasks": "all", "options": {"output": "polygon", **AMG_OPTIONS}}
    )
    assert started.status_code == 202, started.text
    status = wait_finished(sam_backend, started.json()["run_id"])
    assert (status["state"], status["total"], status["done"], status["failed"]) == ("finished_with_errors", 4, 3, 1)
    assert [e["task"] for e in status["errors"]] == [p["broken"]]

    for task_id in p["good"]:
        (prediction,) = ours(ls, task_id, model_prefix)
        task = ls.task(task_id)  # what the labeling UI loads
        (shown,) = [q for q in task["predictions"] if q["id"] == prediction["id"]]
        assert shown["result"] == prediction["result"]
        h, w = IMAGES[p["names"][task_id]].shape[:2]
        assert prediction["result"]
        for region in prediction["result"]:
            assert_valid_polygon_region(region, "poly", "Banana")
            assert polygon_mask(region["value"]["points"], w, h).sum() >= 16  # min_area_px

    # A rerun through the same route replaces the predictions.
    status = wait_finished(
        sam_backend,
        sam_backend.post(
            "/auto-annotate", {"project": p["project"], "tasks": "all", "options": {"output": "polygon", **AMG_OPTIONS}}
        ).json()["run_id"],
    )
    assert status["done"] == 3
    assert [len(ours(ls, t, model_prefix)) for t in p["good"]] == [1, 1, 1]


def test_http_run_refuses_a_project_without_an_output_control(label_studio, sam_backend):
    project = label_studio.create_project(
        "keypoints only",
        """<View>
  <Image name="image" value="$image"/>
  <KeyPointLabels name="kp" toName="image" smart="true"><Label value="A"/></KeyPointLabels>
</View>""",
    )
    answer = sam_backend.post("/auto-annotate", {"project": project, "tasks": "all", "options": {}})
    assert answer.status_code == 422, answer.text
    assert "BrushLabels" in answer.json()["message"]
