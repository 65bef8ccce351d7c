"""Smart clicks through a real Label Studio: UI body -> LS -> our backend -> LS -> UI.

Each test posts what the browser posts to /api/ml/<id>/interactive-annotating (see
ls-samples/ui_browser_to_LS_interactive_annotating_body.json), lets LS build the /predict
call, and decodes the brush RLE LS hands back with the SDK's reference decoder. The mask
must equal, pixel for pixel, what the same engine computes in this process for the same
prompt on the same image, including the refinement of a click by the previous click's
low-res logits (the sequence is replayed here so each test stands alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.engines.grabcut import GrabCutEngine
from sam_model.loading import load_sam
from sam_model.sam1.predictor import SamPredictor
from tests.integration.support import (
    BRUSH_CONFIG,
    IMAGES,
    GrabCutReference,
    backend_env,
    image_bytes,
    keypoint,
    prompt_arrays,
    rectangle,
)
from tests.support.family_checkpoints import FAMILY_CHECKPOINTS, predictor_for
from tests.support.masks import brush_mask
from tests.support.server_log import answering_pids
from tests.support.servers import Backend
from tests.support.torch_threads import torch_threads


def setup_project(ls, backend_url: str, title: str) -> dict:
    """A project like the captured one: two uploaded images and one local-files image, backend connected."""
    project = ls.create_project(title, BRUSH_CONFIG)
    uploaded = ls.upload_images(
        project, {"upload0.png": image_bytes("upload0.png"), "upload1.png": image_bytes("upload1.png")}
    )
    local_dir = ls.files_root / f"project-{project}"
    local_dir.mkdir()
    (local_dir / "local0.png").write_bytes(image_bytes("local0.png"))
    ls.add_local_storage(project, local_dir)
    (local,) = ls.import_tasks(project, [{"image": f"/data/local-files/?d=project-{project}/local0.png"}])
    ml = ls.connect_ml(project, backend_url)
    assert ml["state"] == "CO", ml  # LS called /health and /setup and is satisfied
    tasks = {"upload0.png": uploaded[0], "upload1.png": uploaded[1], "local0.png": local}
    for name, task_id in tasks.items():  # LS named the uploads its own way; check which is which
        data = ls.task(task_id)["data"]["image"]
        assert data.endswith(name) and (data.startswith("/data/upload/") or data.startswith("/data/local-files/"))
    return {"project": project, "ml": ml["id"], "tasks": tasks, "model_version": ml["model_version"]}


def size(name: str) -> tuple[int, int]:
    h, w = IMAGES[name].shape[:2]
    return w, h


def click_through_ls(ls, setup: dict, image: str, regions: list[dict]) -> dict:
    """One smart click in the UI; returns the region LS hands back to the browser."""
    answer = ls.interactive(setup["ml"], setup["tasks"][image], {"result": regions})
    assert "errors" not in answer, answer
    data = answer["data"]
    assert data["model_version"] == setup["model_version"]
    (region,) = data["result"]
    w, h = size(image)
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
    assert (region["original_width"], region["original_height"]) == (w, h)
    assert region["value"]["format"] == "rle"
    assert region["value"]["brushlabels"] == [regions[-1]["value"]["labels"][0]]
    return region


# ---- GrabCut: meaningful masks, exact equality with the engine in-process ------------------------


@pytest.fixture(scope="module")
def grabcut_project(label_studio, grabcut_backend) -> dict:
    return setup_project(label_studio, grabcut_backend.url, "interactive grabcut")


@pytest.mark.parametrize("image", ["upload0.png", "local0.png"])
def test_keypoint_then_negative_keypoint(label_studio, grabcut_project, image):
    w, h = size(image)
    blob = {"upload0.png": (30, 40), "local0.png": (65, 35)}[image]
    first = keypoint(*blob, (w, h))
    negative = keypoint(blob[0] + 6, blob[1] + 6, (w, h), positive=False)
    steps = [[first], [first, negative]]
    expected = GrabCutReference().sequence(image, steps)
    for regions, want in zip(steps, expected, strict=True):
        got = brush_mask(click_through_ls(label_studio, grabcut_project, image, regions))
        np.testing.assert_array_equal(got, want)
    # The object under the click was found: a disc of radius ~32 px, not the whole image.
    first_mask = expected[0]
    assert first_mask[round(blob[1] / 100 * h), round(blob[0] / 100 * w)]
    assert 0.5 * np.pi * 30**2 < first_mask.sum() < 2.0 * np.pi * 34**2
    assert expected[1].sum() < first_mask.sum()  # the negative click took something away


def test_rectangle_then_point_inside_it(label_studio, grabcut_project):
    image = "upload0.png"
    w, h = size(image)
    box = rectangle(60, 52, 26, 34, (w, h))  # around the second disc (72%, 68%)
    point = keypoint(72, 68, (w, h))
    steps = [[box], [box, point]]
    expected = GrabCutReference().sequence(image, steps)
    for regions, want in zip(steps, expected, strict=True):
        got = brush_mask(click_through_ls(label_studio, grabcut_project, image, regions))
        np.testing.assert_array_equal(got, want)
    ys, xs = np.nonzero(expected[0])
    assert xs.min() >= 0.60 * w - 1 and xs.max() <= 0.86 * w + 1 and ys.min() >= 0.52 * h - 1


def test_two_rectangles_give_one_mask_each(label_studio, grabcut_project):
    image = "upload0.png"
    w, h = size(image)
    boxes = [rectangle(15, 20, 30, 40, (w, h)), rectangle(60, 52, 26, 34, (w, h))]
    answer = label_studio.interactive(grabcut_project["ml"], grabcut_project["tasks"][image], {"result": boxes})
    assert "errors" not in answer, answer
    regions = answer["data"]["result"]
    assert len(regions) == 2
    engine = GrabCutEngine()
    embedding = engine.encode(IMAGES[image])
    for region, box in zip(regions, boxes, strict=True):
        want = engine.decode(embedding, **prompt_arrays([box]), multimask=False).masks[0]
        np.testing.assert_array_equal(brush_mask(region), want)


def test_uploaded_image_second_label(label_studio, grabcut_project):
    """The label of the prompt is the label of the mask (Orange here, not the control's first)."""
    image = "upload1.png"
    w, h = size(image)
    region = click_through_ls(label_studio, grabcut_project, image, [keypoint(50, 50, (w, h), label="Orange")])
    assert region["value"]["brushlabels"] == ["Orange"]
    np.testing.assert_array_equal(
        brush_mask(region), GrabCutReference().sequence(image, [[keypoint(50, 50, (w, h))]])[0]
    )


def test_a_click_outside_the_image_is_an_error_ls_shows(label_studio, grabcut_project):
    """A bad prompt comes back to the UI in LS's `errors` list, as the HTTP status only (LS drops our body)."""
    image = "upload0.png"
    answer = label_studio.interactive(
        grabcut_project["ml"], grabcut_project["tasks"][image], {"result": [keypoint(150, 40, size(image))]}
    )
    assert "data" not in answer, answer
    (message,) = answer["errors"]
    assert message.startswith("400 Client Error") and message.endswith("/predict"), message


# ---- SAM (tiny, random weights): the real SAM code path --------------------------------------------


@pytest.fixture(scope="module")
def sam_project(label_studio, sam_backend) -> dict:
    return setup_project(label_studio, sam_backend.url, "interactive sam")


@pytest.fixture(scope="module")
def sam_reference(tiny_checkpoint: Path):
    with torch_threads(1):
        yield SamPredictor(load_sam("tiny", str(tiny_checkpoint), device="cpu"), "reference")


@pytest.mark.parametrize("image", ["upload1.png", "local0.png"])
def test_sam_click_sequence_matches_the_predictor(label_studio, sam_project, sam_reference, image):
    """Upload through LS's /data/upload/ and local files through LS's /data/local-files/ (this
    backend has no LOCAL_FILES_DOCUMENT_ROOT): both fetched with the token, same masks."""
    w, h = size(image)
    a, b = keypoint(40, 45, (w, h)), keypoint(60, 55, (w, h), positive=False)
    box = rectangle(20, 20, 50, 50, (w, h))
    embedding = sam_reference.encode(IMAGES[image])
    first = sam_reference.decode(embedding, **prompt_arrays([a]), multimask=True, best_only=True)
    second = sam_reference.decode(
        embedding, **prompt_arrays([a, b]), mask_input=first.low_res_logits[:1], multimask=False
    )
    third = sam_reference.decode(
        embedding, **prompt_arrays([a, b, box]), mask_input=second.low_res_logits[:1], multimask=False
    )
    for regions, want in (([a], first), ([a, b], second), ([a, b, box], third)):
        region = click_through_ls(label_studio, sam_project, image, regions)
        np.testing.assert_array_equal(brush_mask(region), want.masks[0])
        assert region["score"] == pytest.approx(float(want.scores[0]), abs=1e-5)


# ---- zero configuration: the credentials LS sends in /setup are enough ----------------------------


@pytest.fixture(scope="module")
def setup_only_backend(backends, tmp_path_factory):
    """A backend started with no LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (and no Redis) at all."""

    backend = Backend({"SAM_ENGINE": "grabcut"}, tmp_path_factory.mktemp("setup-only") / "gunicorn.log")
    backends.append(backend)
    return backend


def test_backend_without_ls_settings_uses_the_hostname_and_token_from_setup(label_studio, setup_only_backend):
    project = setup_project(label_studio, setup_only_backend.url, "setup only")
    image = "upload1.png"
    w, h = size(image)
    region = click_through_ls(label_studio, project, image, [keypoint(50, 50, (w, h))])
    np.testing.assert_array_equal(
        brush_mask(region), GrabCutReference().sequence(image, [[keypoint(50, 50, (w, h))]])[0]
    )


@pytest.fixture(scope="module")
def two_worker_setup_backend(redis_server, backends, tmp_path_factory):
    """WORKERS=2 sharing a Redis, and no LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY: /setup reaches one worker."""

    env = {"SAM_ENGINE": "grabcut", "WORKERS": "2", "THREADS": "2", "REDIS_URL": redis_server.url}
    backend = Backend(env, tmp_path_factory.mktemp("two-workers") / "gunicorn.log")
    backends.append(backend)
    return backend


def test_two_workers_both_use_what_setup_said(label_studio, two_worker_setup_backend):
    """Every click works on either worker: the one /setup reached shares it through Redis (without
    that, 1 click in 6 failed in the field with 424 "the LS address is unknown"). Connecting sends
    /setup twice, each to either worker; clicks send none (opening a task would send more, so no
    task is opened here). tests/http/test_setup.py proves the same with exactly one /setup."""
    ls, backend = label_studio, two_worker_setup_backend
    project = ls.create_project("two workers, setup only", BRUSH_CONFIG)
    (task,) = ls.upload_images(project, {"upload1.png": image_bytes("upload1.png")})
    ml = ls.connect_ml(project, backend.url)
    assert ml["state"] == "CO", ml
    w, h = size("upload1.png")
    pids: set[str] = set()
    clicks = 0
    while clicks < 12 or (len(pids) < 2 and clicks < 36):  # bounded; both workers must have answered
        answer = ls.interactive(ml["id"], task, {"result": [keypoint(20 + 5 * (clicks % 12), 50, (w, h))]})
        assert "errors" not in answer, f"click {clicks + 1}: {answer}"
        clicks += 1
        pids = answering_pids(backend.log())
    assert len(pids) == 2, f"{clicks} clicks all reached one worker"


# ---- other model families: the same clicks through LS, served by SAM 2.1 and MobileSAM ------------


@pytest.fixture(scope="module", params=["sam2.1_hiera_tiny", "mobile_sam"])
def family_setup(request, label_studio, redis_server, backends, tmp_path_factory):
    """(predictor alone, project) for a backend serving one family from its official-layout file."""
    model_type = request.param
    checkpoint = FAMILY_CHECKPOINTS[model_type](tmp_path_factory.mktemp(model_type))
    env = backend_env(
        label_studio,
        redis_server,
        SAM_ENGINE="sam",
        SAM_MODEL=model_type,
        SAM_CHECKPOINT=str(checkpoint),
        SAM_DEVICE="cpu",
    )
    backend = Backend(env, tmp_path_factory.mktemp("family") / "gunicorn.log")
    backends.append(backend)
    project = setup_project(label_studio, backend.url, f"interactive {model_type}")
    assert project["model_version"].startswith(f"sam-{model_type}-")
    with torch_threads(1):
        yield predictor_for(model_type, checkpoint), project


def test_a_click_sequence_of_each_family_matches_its_predictor(label_studio, family_setup):
    predictor, project = family_setup
    image = "upload1.png"
    w, h = size(image)
    a, b = keypoint(40, 45, (w, h)), keypoint(60, 55, (w, h), positive=False)
    embedding = predictor.encode(IMAGES[image])
    first = predictor.decode(embedding, **prompt_arrays([a]), multimask=True, best_only=True)
    second = predictor.decode(embedding, **prompt_arrays([a, b]), mask_input=first.low_res_logits[:1], multimask=False)
    for regions, want in (([a], first), ([a, b], second)):
        region = click_through_ls(label_studio, project, image, regions)
        np.testing.assert_array_equal(brush_mask(region), want.masks[0])
        assert region["score"] == pytest.approx(float(want.scores[0]), abs=1e-5)
