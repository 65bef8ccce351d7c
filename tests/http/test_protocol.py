"""The LS protocol through a real gunicorn (GrabCut engine: meaningful masks, no weights).

Every captured LS request in tests/fixtures/ls-samples is replayed; images come from a fake LS
that demands the token and counts fetches; Redis is a real redis-server.
"""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw

from backend.engines.grabcut import GrabCutEngine
from backend.interactive.prompts import parse_context
from tests.support.fake_ls import ls_env
from tests.support.images import scene
from tests.support.masks import brush_mask, iou
from tests.support.samples import CONFIG, LS_TOKEN, SAMPLE_IMAGES, click, predict_body, sample, task_of

POLYGON_CONFIG = CONFIG.replace("BrushLabels", "PolygonLabels")


def expected_mask(path: str, context: dict) -> np.ndarray:
    """The engine's own answer for this prompt, computed in the test process."""
    prompt = parse_context(context, 64, 16).prompts[0]
    engine = GrabCutEngine()
    return engine.decode(
        engine.encode(SAMPLE_IMAGES[path]),
        point_coords=prompt.point_coords,
        point_labels=prompt.point_labels,
        box=prompt.box,
    ).masks[0]


@pytest.fixture(scope="module")
def server(fake_ls, redis_server, start_backend):
    return start_backend(
        ls_env(
            fake_ls, SAM_ENGINE="grabcut", REDIS_URL=redis_server.url, MAX_REQUEST_BYTES="200000", WARM_QUEUE_SIZE="8"
        )
    )


# ---- connection -----------------------------------------------------------------------------


def test_health_and_root_report_the_engine_honestly(server):
    for path in ("/health", "/"):
        body = server.get(path).json()
        assert body["status"] == "UP" and body["model_class"] == "SamBackend"
        assert body["engine"] == "grabcut" and body["model_version"] == "grabcut-opencv" and "not SAM" in body["note"]


def test_setup_sample_is_fast_and_answers_the_model_version(server):
    started = time.monotonic()
    response = server.post("/setup", sample("setup_request.json"))
    assert response.status_code == 200 and response.json() == {"model_version": "grabcut-opencv"}
    assert time.monotonic() - started < 3.0  # LS gives /setup 3 s


@pytest.mark.parametrize("name", ["webhook_start_training.json", "webhook_annotation_created.json"])
def test_webhook_samples_are_acknowledged(server, name):
    response = server.post("/webhook", sample(name))
    assert response.status_code == 200
    assert "not trained" in response.json()["message"] and sample(name)["action"] in response.json()["message"]


# ---- batch: empty answers now, warm cache for the first click -------------------------------


def test_batch_sample_answers_each_task_at_once_and_warms_their_images(server, fake_ls):
    started = time.monotonic()
    response = server.post("/predict", sample("predict_batch_request.json"))
    assert time.monotonic() - started < 3.0  # no encoding inside the request, even on a busy CI machine
    # One entry per task, each an empty list: no prediction for LS to store (see backend.interactive.model).
    assert response.json()["results"] == [[], [], []]
    path = task_of(3)["data"]["image"]
    deadline = time.monotonic() + 20
    while server.metric("sam_warmup_done_total", ok="true") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_ls.hits[path] == 1
    assert {f"Token {LS_TOKEN}"} == fake_ls.auth_seen  # credentials went to LS, as LS expects them
    # The annotator now clicks on task 3 (captured from the UI): a cache hit, no download.
    captured = sample("ui_interactive_capture_task3.json")["captured"][0]["request"]
    hits_before = server.metric("sam_embedding_cache_total", level="local", source="click")
    assert server.post("/predict", predict_body(task_of(3), captured["context"])).status_code == 200
    assert server.metric("sam_embedding_cache_total", level="local", source="click") == hits_before + 1
    assert fake_ls.hits[path] == 1


# ---- every interactive sample ----------------------------------------------------------------


def _interactive_samples() -> list[tuple[str, dict]]:
    cases = [
        ("predict_interactive_request.json", sample("predict_interactive_request.json")),
        ("predict_interactive_request_from_UI.json", sample("predict_interactive_request_from_UI.json")),
    ]
    for name in ("ui_interactive_capture_task1.json", "ui_interactive_capture_task3.json"):
        request = sample(name)["captured"][0]["request"]
        cases.append((name, predict_body(task_of(request["task"]), request["context"])))
    browser = sample("ui_browser_to_LS_interactive_annotating_body.json")
    cases.append(
        (
            "ui_browser_to_LS_interactive_annotating_body.json",
            predict_body(task_of(browser["task"]), browser["context"]),
        )
    )
    for i, step in enumerate(sample("ui_multi_click_task4.json")):
        cases.append((f"ui_multi_click_task4.json[{i}]", predict_body(task_of(step["task"]), step["context"])))
    return cases


@pytest.mark.parametrize("name, body", _interactive_samples(), ids=[c[0] for c in _interactive_samples()])
def test_interactive_sample_gets_a_brush_mask_under_the_clicks(server, name, body):
    response = server.post("/predict", body)
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["results"]
    (region,) = prediction["result"]
    context = body["params"]["context"]
    first = context["result"][0]
    assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "tag", "image")
    assert region["value"]["brushlabels"] == ["Banana"] and region["value"]["format"] == "rle"
    assert (region["original_width"], region["original_height"]) == (first["original_width"], first["original_height"])
    assert region["image_rotation"] == 0 and prediction["model_version"] == "grabcut-opencv"
    assert 0 <= prediction["score"] <= 1
    mask = brush_mask(region)
    for point in context["result"]:
        x = int(point["value"]["x"] / 100 * point["original_width"])
        y = int(point["value"]["y"] / 100 * point["original_height"])
        assert mask[y, x] == point.get("is_positive", True), f"{name}: click at {x},{y}"
    if "multi_click" not in name:  # refinement seeds GrabCut with the previous mask: not a lone decode
        np.testing.assert_array_equal(mask, expected_mask(body["tasks"][0]["data"]["image"], context))


def test_answer_has_the_shape_ls_stored_from_a_real_backend(server):
    """Our prediction and region carry every key of the ones LS 1.23 accepted and stored."""
    stored = sample("stored_prediction_task.json")[0]
    relayed = sample("interactive_annotating_response_from_LS.json")["data"]
    prediction = server.post("/predict", sample("predict_interactive_request.json")).json()["results"][0]
    assert set(relayed) <= set(prediction)
    region, stored_region = prediction["result"][0], stored["result"][0]
    assert set(stored_region) <= set(region) and set(stored_region["value"]) <= set(region["value"])
    assert isinstance(region["id"], str) and region["id"]


def test_boxes_only_project_gets_a_rectangle_around_the_object(server):
    config = (
        '<View><Image name="image" value="$image"/>'
        '<KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Banana"/></KeyPointLabels>'
        '<RectangleLabels name="boxes" toName="image"><Label value="Fruit"/></RectangleLabels></View>'
    )
    context = sample("predict_interactive_request.json")["params"]["context"]
    (region,) = server.post("/predict", predict_body(task_of(1), context, config)).json()["results"][0]["result"]
    assert (region["type"], region["from_name"], region["value"]["rectanglelabels"]) == (
        "rectanglelabels",
        "boxes",
        ["Fruit"],
    )
    mask = expected_mask("/data/upload/1/cd422a2f-up0.png", context)
    ys, xs = np.nonzero(mask)
    value = region["value"]
    assert value["x"] == pytest.approx(xs.min() / 320 * 100, abs=0.5) and value["y"] == pytest.approx(
        ys.min() / 240 * 100, abs=0.5
    )
    assert value["width"] == pytest.approx((xs.max() + 1 - xs.min()) / 320 * 100, abs=0.5)


def test_second_click_on_an_image_is_a_cache_hit_without_download(server, fake_ls):
    path, (w, h) = "/data/upload/1/3b361a25-up1.png", (320, 240)
    fake_ls.hits.clear()
    server.post("/predict", predict_body(task_of(2), {"result": [click(25, 25, w, h)]}))
    fetched = fake_ls.hits[path]
    local = server.metric("sam_embedding_cache_total", level="local", source="click")
    response = server.post("/predict", predict_body(task_of(2), {"result": [click(26, 24, w, h)]}))
    assert response.status_code == 200 and response.json()["results"][0]["result"]
    assert fake_ls.hits[path] == fetched <= 1
    assert server.metric("sam_embedding_cache_total", level="local", source="click") == local + 1


def test_refinement_reuses_the_previous_clicks_logits(server):
    found = server.metric("sam_refine_logits_total", found="true")
    steps = sample("ui_multi_click_task4.json")
    for step in steps:
        assert server.post("/predict", predict_body(task_of(4), step["context"])).status_code == 200
    assert server.metric("sam_refine_logits_total", found="true") == found + len(steps) - 1


def test_rotated_view_gives_the_same_mask_and_echoes_the_rotation(server):
    context = copy.deepcopy(sample("predict_interactive_request.json")["params"]["context"])
    plain = server.post("/predict", predict_body(task_of(1), context)).json()["results"][0]["result"][0]
    context["result"][0]["image_rotation"] = 90
    rotated = server.post("/predict", predict_body(task_of(1), context)).json()["results"][0]["result"][0]
    assert rotated["image_rotation"] == 90
    np.testing.assert_array_equal(brush_mask(rotated), brush_mask(plain))


def test_box_prompt_and_several_boxes(server):
    w, h = 320, 240
    box = {
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "from_name": "tag3",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": 5, "y": 60, "width": 25, "height": 35, "rotation": 0, "rectanglelabels": ["Orange"]},
    }
    other = copy.deepcopy(box)
    other["value"].update(x=33, y=28, width=34, height=45)
    one = server.post("/predict", predict_body(task_of(1), {"result": [box]})).json()["results"][0]["result"]
    assert len(one) == 1 and one[0]["value"]["brushlabels"] == ["Orange"]
    mask = brush_mask(one[0])
    assert mask[189, 53] and not mask[:, 100:].any()  # the disc in the box, nothing outside it
    two = server.post("/predict", predict_body(task_of(1), {"result": [box, other]})).json()["results"][0]["result"]
    assert len(two) == 2 and brush_mask(two[1])[120, 160]


def test_polygon_output_rasterises_back_to_the_mask(server):
    context = sample("predict_interactive_request.json")["params"]["context"]
    response = server.post("/predict", predict_body(task_of(1), context, POLYGON_CONFIG))
    (region,) = response.json()["results"][0]["result"]
    assert region["type"] == "polygonlabels" and region["value"]["polygonlabels"] == ["Banana"]
    canvas = Image.new("1", (320, 240))
    ImageDraw.Draw(canvas).polygon(
        [(x / 100 * 320 - 0.5, y / 100 * 240 - 0.5) for x, y in region["value"]["points"]], fill=1
    )
    expected = expected_mask("/data/upload/1/cd422a2f-up0.png", context)
    assert iou(np.array(canvas), expected) >= 0.95


# ---- bad input: clear JSON 4xx, never a 500, worker alive -----------------------------------


def _raw(server, data: str | bytes, path: str = "/predict") -> requests.Response:
    return requests.post(server.url + path, data=data, headers={"Content-Type": "application/json"}, timeout=30)


def test_bad_requests_get_json_errors_and_the_worker_lives(server, fake_ls):
    interactive = sample("predict_interactive_request.json")
    nan_body = json.dumps(interactive).replace('"x": 50.0', '"x": NaN')
    missing = predict_body({"id": 9, "data": {"image": "/data/upload/1/missing.png"}}, interactive["params"]["context"])
    no_output = predict_body(
        task_of(1),
        interactive["params"]["context"],
        '<View><Image name="image" value="$image"/><KeyPointLabels name="tag2" toName="image" smart="true">'
        '<Label value="Banana"/></KeyPointLabels></View>',
    )
    doctype = predict_body(task_of(1), interactive["params"]["context"], '<!DOCTYPE v [<!ENTITY a "b">]><View/>')
    wrong_size = copy.deepcopy(interactive)
    wrong_size["params"]["context"]["result"][0]["original_width"] = 640
    cases = [
        (_raw(server, "{not json"), 400),
        (_raw(server, "[1, 2]"), 400),
        (_raw(server, nan_body), 400),
        (_raw(server, "[" * 50_000 + "]" * 50_000), 400),
        (server.post("/predict", {**interactive, "tasks": [{"id": 1, "data": "x"}]}), 400),
        (_raw(server, b"{" + b" " * 300_000 + b"}"), 413),
        (_raw(server, (chunk for chunk in [b'{"tasks": "', b"a" * 300_000, b'"}'])), 413),  # chunked, no length
        (server.post("/predict", {**interactive, "label_config": ["<View/>"]}), 400),
        (server.post("/predict", {"tasks": "nope", "label_config": CONFIG}), 400),
        (server.post("/predict", {"tasks": [task_of(1)], "params": interactive["params"]}), 400),
        (server.post("/predict", missing), 424),
        (server.post("/predict", no_output), 422),
        (server.post("/predict", doctype), 400),
        (server.post("/predict", wrong_size), 422),
        (server.get("/no-such-route"), 404),
        (server.get("/predict"), 405),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] and body["message"]
    assert "BrushLabels" in cases[11][0].json()["message"]
    assert server.get("/health").status_code == 200
    assert "Traceback" not in server.log()


def test_log_has_one_line_per_predict_with_timings_and_no_secrets(server):
    log = server.log()
    lines = [line for line in log.splitlines() if "POST /predict 200" in line]
    assert lines and any(
        "fetch=" in line and "encode=" in line and "decode=" in line and "output=" in line for line in lines
    )
    assert LS_TOKEN not in log and "Banana" not in log


# ---- deployment shapes: auth, two processes on one Redis, Redis outage -----------------------


def test_basic_auth_guards_every_route(fake_ls, start_backend):
    guarded = start_backend(
        ls_env(fake_ls, SAM_ENGINE="grabcut", BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret"), auth=("ls", "s3cret")
    )
    for method, path in (
        ("get", "/health"),
        ("get", "/metrics"),
        ("post", "/predict"),
        ("post", "/setup"),
        ("post", "/webhook"),
    ):
        for auth in (None, ("ls", "wrong"), ("other", "s3cret")):
            response = getattr(requests, method)(guarded.url + path, json={}, auth=auth, timeout=10)
            assert response.status_code == 401 and response.json()["error"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert guarded.get("/health").status_code == 200


def test_second_process_finds_the_first_ones_embedding_in_redis(server, fake_ls, redis_server, start_backend):
    path = "/data/upload/1/shared.png"
    fake_ls.add(path, scene(300, 200, [(50, 50, 40)], seed=7))
    task = {"id": 77, "data": {"image": path}}
    context = {"result": [click(50, 50, 300, 200)]}
    first = server.post("/predict", predict_body(task, context)).json()["results"][0]["result"][0]
    assert fake_ls.hits[path] == 1
    second = start_backend(ls_env(fake_ls, SAM_ENGINE="grabcut", REDIS_URL=redis_server.url))
    response = second.post("/predict", predict_body(task, context))
    assert response.status_code == 200 and fake_ls.hits[path] == 1
    assert second.metric("sam_embedding_cache_total", level="redis", source="click") == 1
    np.testing.assert_array_equal(brush_mask(response.json()["results"][0]["result"][0]), brush_mask(first))


def test_redis_killed_mid_session_clicks_still_answer(server, fake_ls, redis_server):
    redis_server.kill()
    try:
        known = server.post("/predict", predict_body(task_of(2), {"result": [click(25, 25, 320, 240)]}))
        fake_ls.add("/data/upload/1/after-outage.png", scene(200, 200, [(50, 50, 30)], seed=9))
        fresh = server.post(
            "/predict",
            predict_body(
                {"id": 88, "data": {"image": "/data/upload/1/after-outage.png"}}, {"result": [click(50, 50, 200, 200)]}
            ),
        )
        assert known.status_code == 200 and fresh.status_code == 200, fresh.text
        assert fresh.json()["results"][0]["result"]
    finally:
        redis_server.start()
