"""The try-it page's server side: / by Accept header, the page's files, Server-Timing on a click,
GET /try/info and POST /try/automatic-masks (bounds, errors, and the masks themselves).

Flask's test client with the real app (GrabCut, or the tiny random-weight SAM for automatic
masks); images travel as data: URIs, as the page sends them. The page in a browser:
tests/e2e/test_tryit_page.py.
"""

from __future__ import annotations

import base64
import re
import time

import numpy as np
import pytest

from backend.settings import Settings
from backend.web import tryit_routes
from backend.web.app import create_app
from sam_model import OFFICIAL_CHECKPOINTS
from sam_model.amg import AutomaticMaskGenerator
from sam_model.families import OFFICIAL_TYPES
from sam_model.loading import load_sam
from sam_model.sam1.predictor import SamPredictor
from tests.support.images import png, scene
from tests.support.masks import brush_mask
from tests.support.samples import click, predict_body

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
IMAGE = scene(96, 72, [(40, 50, 14), (75, 30, 9)], seed=3)
TIMING_ENTRY = re.compile(r"^(?:(fetch|encode|decode|output);dur=(\d+\.\d)|cache;desc=(local|redis|computed))$")


def data_uri(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def server_timing(header: str) -> dict[str, str]:
    """`a;dur=1.5, cache;desc=local` -> {"a": "1.5", "cache": "local"}; every entry must be well-formed."""
    found = {}
    for entry in header.split(", "):
        match = TIMING_ENTRY.match(entry)
        assert match, f"malformed Server-Timing entry {entry!r} in {header!r}"
        found[match.group(1) or "cache"] = match.group(2) or match.group(3)
    return found


def loaded(client) -> dict:
    """/try/info once the background load has finished."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = client.get("/try/info").json
        if info["model_loaded"]:
            return info
        time.sleep(0.05)
    raise AssertionError("the engine did not load in 30 s")


@pytest.fixture(scope="module")
def grabcut():
    return create_app(Settings(sam_engine="grabcut")).test_client()


@pytest.fixture(scope="module")
def sam(tiny_checkpoint):
    settings = Settings(sam_engine="sam", sam_model="tiny", sam_checkpoint=str(tiny_checkpoint), sam_device="cpu")
    return create_app(settings).test_client()


# ---- / and the page's files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/json, text/html", "text/*;q=0.5, */*"]
)
def test_json_clients_get_the_health_json_at_root(grabcut, accept):
    response = grabcut.get("/", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.json == grabcut.get("/health").json and response.json["status"] == "UP"
    assert "Accept" in response.headers["Vary"]


@pytest.mark.parametrize("accept", ["text/html", BROWSER_ACCEPT])
def test_browsers_get_the_page_at_root(grabcut, accept):
    response = grabcut.get("/", headers={"Accept": accept})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert "try/assets/tryit.js" in response.text and "Accept" in response.headers["Vary"]
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert grabcut.get("/try").data == response.data  # the page's own address, whatever the Accept
    assert grabcut.get("/health", headers={"Accept": accept}).mimetype == "application/json"  # only / negotiates


def test_page_files_are_small_and_load_nothing_from_elsewhere(grabcut):
    page = grabcut.get("/try").text
    files = {"index.html": page}
    for name, mimetype in tryit_routes.ASSETS.items():
        assert f"try/assets/{name}" in page
        response = grabcut.get(f"/try/assets/{name}")
        assert response.status_code == 200 and response.mimetype == mimetype
        files[name] = response.text
    assert sum(len(text.encode()) for text in files.values()) < 64 * 1024
    for name, text in files.items():
        assert not re.search(r"https?://|@import|(?:src|href)\s*=\s*[\"']//", text), f"{name} names another origin"
    # Every element the script looks up exists in the page.
    for element_id in set(re.findall(r'\$\("([\w-]+)"\)', files["tryit.js"])):
        assert f'id="{element_id}"' in page, f"tryit.js uses #{element_id}, which index.html lacks"
    missing = grabcut.get("/try/assets/../app.py")
    assert missing.status_code == 404 and missing.json["error"]
    assert grabcut.get("/try/assets/secret.js").status_code == 404


def test_basic_auth_guards_the_page_and_its_routes():
    client = create_app(Settings(sam_engine="grabcut", basic_auth_user="ls", basic_auth_pass="s3cret")).test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:s3cret").decode()}
    requests = [
        ("get", "/", {"Accept": "text/html"}),
        ("get", "/try", {}),
        ("get", "/try/assets/tryit.js", {}),
        ("get", "/try/info", {}),
        ("post", "/try/automatic-masks", {}),
    ]
    for method, path, headers in requests:
        refused = getattr(client, method)(path, headers=headers, json={})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic"), path
        allowed = getattr(client, method)(path, headers={**headers, **good}, json={})
        assert allowed.status_code != 401, path


# ---- a click's timings ----------------------------------------------------------------------


def test_a_click_carries_its_timings_in_server_timing(grabcut):
    image = scene(120, 90, [(50, 50, 20)], seed=11)
    task = {"id": 1, "data": {"image": data_uri(image)}}
    first = grabcut.post("/predict", json=predict_body(task, {"result": [click(50, 50, 120, 90)]}))
    assert first.status_code == 200 and set(first.json) == {"results"}  # the body LS reads is unchanged
    timing = server_timing(first.headers["Server-Timing"])
    assert timing["cache"] == "computed" and {"fetch", "encode", "decode", "output"} <= set(timing)
    second = grabcut.post(
        "/predict", json=predict_body(task, {"result": [click(50, 50, 120, 90), click(5, 5, 120, 90, positive=False)]})
    )
    timing = server_timing(second.headers["Server-Timing"])
    assert timing["cache"] == "local" and set(timing) == {"cache", "decode", "output"}
    warm_up = grabcut.post("/predict", json=predict_body(task, None))
    assert warm_up.status_code == 200 and "Server-Timing" not in warm_up.headers  # no click, no timings


# ---- GET /try/info ---------------------------------------------------------------------------


def test_info_lists_the_loadable_models_and_what_runs(tmp_path, monkeypatch):
    client = create_app(Settings(sam_engine="grabcut", embedding_cache_mb=64)).test_client()
    present = OFFICIAL_CHECKPOINTS["vit_b"].filename
    (tmp_path / present).write_bytes(b"weights")
    monkeypatch.setattr(tryit_routes, "CHECKPOINT_DIR", tmp_path)
    info = loaded(client)
    assert (info["model_id"], info["device"], info["precision"]) == ("grabcut-opencv", "cpu", None)
    assert [m["model"] for m in info["models"]] == list(OFFICIAL_TYPES)
    assert {m["model"] for m in info["models"] if m["available"]} == {"vit_b"}
    assert not any(m["in_use"] for m in info["models"])  # GrabCut is no SAM model
    assert info["embedding_cache"] == {
        "capacity_mb": 64,
        "entries": 0,
        "held_mb": 0.0,
        "redis": False,
        "lookups": {"local": 0, "redis": 0, "computed": 0},
    }
    assert info["automatic_masks"]["points_per_side"] == {"min": 1, "max": 32}
    task = {"id": 1, "data": {"image": data_uri(IMAGE)}}
    for _ in range(2):
        assert client.post("/predict", json=predict_body(task, {"result": [click(40, 50, 96, 72)]})).status_code == 200
    after = client.get("/try/info").json["embedding_cache"]
    assert after["lookups"] == {"local": 1, "redis": 0, "computed": 1}
    assert after["entries"] == 1  # the clicked image's embedding, held in this process


def test_info_marks_the_model_in_use(sam):
    info = loaded(sam)
    (in_use,) = [m for m in info["models"] if m["in_use"]]
    assert in_use == {
        "model": "tiny",
        "family": "SAM v1",
        "checkpoint": "sam_tiny_test.pth",
        "available": True,
        "in_use": True,
    }
    assert (info["device"], info["precision"]) == ("cpu", "fp32")  # "auto" resolved as loaded


# ---- POST /try/automatic-masks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body, names",
    [
        ({"image": None}, "image"),
        ({"image": "ftp://example.org/a.png"}, "image"),
        ({"image": "/data/upload/1/a.png"}, "image"),
        ({"image": 7}, "image"),
        ({"options": {"points_per_side": 33}}, "points_per_side"),
        ({"options": {"points_per_side": 0}}, "points_per_side"),
        ({"options": {"max_masks": 201}}, "max_masks"),
        ({"options": {"points_per_batch": 257}}, "points_per_batch"),
        ({"options": {"crop_n_layers": 1}}, "crop_n_layers"),
        ({"options": {"output": "rectangle"}}, "output"),
        ({"options": {"pred_iou_thresh": 1.5}}, "pred_iou_thresh"),
        ({"options": "fast"}, "options"),
    ],
)
def test_automatic_masks_refuse_what_is_out_of_bounds(grabcut, body, names):
    response = grabcut.post("/try/automatic-masks", json={"image": data_uri(IMAGE), **body})
    assert response.status_code == 400 and response.json["error"] == "bad_request"
    assert names in response.json["message"], response.json


def test_automatic_masks_need_sam_and_a_json_body(grabcut):
    at_bounds = {"points_per_side": 32, "max_masks": 200, "points_per_batch": 256, "output": "polygon"}
    refused = grabcut.post("/try/automatic-masks", json={"image": data_uri(IMAGE), "options": at_bounds})
    assert refused.status_code == 422 and "needs SAM" in refused.json["message"]
    assert grabcut.post("/try/automatic-masks", data="[1]", content_type="application/json").status_code == 400
    assert grabcut.get("/try/automatic-masks").status_code == 405


def test_automatic_masks_of_a_non_image_are_refused(sam):
    response = sam.post("/try/automatic-masks", json={"image": "data:text/plain,hello"})
    assert response.status_code == 415 and response.json["error"] == "unsupported_media"


def test_automatic_masks_are_the_generators_masks(sam, tiny_checkpoint):
    # Random weights: no mask passes the usual thresholds, and NMS would leave one.
    kept = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}
    options = {"points_per_side": 4, "max_masks": 5, **kept}
    response = sam.post("/try/automatic-masks", json={"image": data_uri(IMAGE), "options": options})
    assert response.status_code == 200, response.json
    assert re.fullmatch(r"total;dur=\d+\.\d", response.headers["Server-Timing"])
    regions = response.json["result"]
    assert len(regions) == 5 and all(
        (r["type"], r["from_name"], r["to_name"]) == ("brushlabels", "mask", "image") for r in regions
    )

    predictor = SamPredictor(load_sam("tiny", str(tiny_checkpoint), device="cpu"), "reference")
    generator = AutomaticMaskGenerator(predictor, points_per_side=4, mode="fast", **kept)
    records = sorted(generator.generate(IMAGE), key=lambda m: m["area"], reverse=True)[:5]
    expected = sorted(np.asarray(m["segmentation"], bool).tobytes() for m in records)
    assert sorted(brush_mask(r).tobytes() for r in regions) == expected

    polygons = sam.post(
        "/try/automatic-masks",
        json={"image": data_uri(IMAGE), "options": {**options, "points_per_side": 2, "output": "polygon"}},
    )
    assert polygons.status_code == 200 and {r["type"] for r in polygons.json["result"]} == {"polygonlabels"}
