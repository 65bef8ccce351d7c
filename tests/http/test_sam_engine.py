"""The real SAM code path through gunicorn: a tiny random-weight checkpoint, exact mask checks.

Random weights make arbitrary but deterministic masks, so the server's answer must equal,
pixel for pixel, what the same predictor computes alone in this process (both run torch
with one thread, so the arithmetic is the same).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from backend.interactive.prompts import parse_context
from sam_model.loading import load_sam
from sam_model.sam1.predictor import SamPredictor
from tests.support.fake_ls import ls_env
from tests.support.images import scene
from tests.support.masks import brush_mask
from tests.support.samples import SAMPLE_IMAGES, click, predict_body, sample, task_of
from tests.support.torch_threads import torch_threads


@pytest.fixture(scope="module")
def server(fake_ls, redis_server, start_backend, tiny_checkpoint):
    # THREADS=24: 22 cold slots (backend.interactive.cold_slots), so 20 concurrent cold clicks are all served
    return start_backend(
        ls_env(
            fake_ls,
            SAM_ENGINE="sam",
            SAM_MODEL="tiny",
            SAM_CHECKPOINT=str(tiny_checkpoint),
            SAM_DEVICE="cpu",
            REDIS_URL=redis_server.url,
            THREADS="24",
        )
    )


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    """The same predictor in this process; its own embeddings, one thread like the server."""
    predictor = SamPredictor(load_sam("tiny", str(tiny_checkpoint), device="cpu"), "reference")
    embeddings: dict[int, object] = {}

    def decode(image: np.ndarray, context: dict, **kw) -> object:
        if id(image) not in embeddings:
            embeddings[id(image)] = predictor.encode(image)
        prompt = parse_context(context, 64, 16).prompts[0]
        return predictor.decode(
            embeddings[id(image)],
            point_coords=prompt.point_coords,
            point_labels=prompt.point_labels,
            box=prompt.box,
            **kw,
        )

    with torch_threads(1):
        yield decode


def test_health_names_the_sam_model(server, tiny_checkpoint):
    body = server.get("/health").json()
    assert body["engine"] == "sam" and body["model"] == "tiny" and body["model_loaded"] is True
    assert body["model_version"].startswith("sam-tiny-sam_tiny_test-")


def test_single_click_returns_the_best_of_three_exactly_as_rle(server, reference):
    body = sample("predict_interactive_request.json")
    (prediction,) = server.post("/predict", body).json()["results"]
    image = SAMPLE_IMAGES[body["tasks"][0]["data"]["image"]]
    expected = reference(image, body["params"]["context"], multimask=True, best_only=True)
    np.testing.assert_array_equal(brush_mask(prediction["result"][0]), expected.masks[0])
    assert prediction["score"] == pytest.approx(float(expected.scores[0]), abs=1e-5)
    three = reference(image, body["params"]["context"], multimask=True)
    assert float(expected.scores[0]) == pytest.approx(float(three.scores.max()), abs=1e-6)


def test_next_click_refines_with_the_previous_logits(server, reference):
    steps = sample("ui_multi_click_task4.json")
    image = SAMPLE_IMAGES[task_of(4)["data"]["image"]]
    previous = None
    for step in steps:
        context = step["context"]
        result = server.post("/predict", predict_body(task_of(4), context)).json()["results"][0]["result"]
        if previous is None:
            expected = reference(image, context, multimask=True, best_only=True)
        else:
            expected = reference(image, context, mask_input=previous.low_res_logits[:1], multimask=False)
        np.testing.assert_array_equal(brush_mask(result[0]), expected.masks[0])
        previous = expected


def test_twenty_concurrent_clicks_on_five_cold_images_match_each_computed_alone(server, reference, fake_ls):
    images = {
        f"/data/upload/1/conc{i}.png": scene(240 + 16 * i, 200, [(30 + 10 * i, 50, 30)], seed=20 + i) for i in range(5)
    }
    for path, image in images.items():
        fake_ls.add(path, image)
    jobs = [
        (i, path, {"result": [click(10 + 20 * k, 20 + 15 * k, images[path].shape[1], 200)]})
        for i, path in enumerate(images)
        for k in range(4)
    ]

    def ask(job):
        i, path, context = job
        response = server.post("/predict", predict_body({"id": 100 + i, "data": {"image": path}}, context))
        assert response.status_code == 200, response.text
        return brush_mask(response.json()["results"][0]["result"][0])

    with ThreadPoolExecutor(max_workers=20) as pool:
        masks = list(pool.map(ask, jobs))
    for (_, path, context), mask in zip(jobs, masks, strict=True):
        np.testing.assert_array_equal(mask, reference(images[path], context, multimask=True, best_only=True).masks[0])
    assert all(fake_ls.hits[path] == 1 for path in images)  # each image fetched and encoded once
    assert server.metric("sam_encoder_seconds_count") >= 5
