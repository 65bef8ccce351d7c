"""A PolygonLabels project: smart clicks come back as polygons that LS stores and serves back intact.

The annotator accepts the suggestion, and the UI saves it as an annotation (POST
/api/tasks/<id>/annotations, as in ls-samples/ui_interactive_capture_task3.json). The polygon
must be valid for LS (percent points in 0..100, closed, at least a triangle), survive the
round trip unchanged, and cover the object GrabCut found (IoU against the engine's own mask).
"""

from __future__ import annotations

import pytest

from backend.engines.grabcut import GrabCutEngine
from tests.integration.support import (
    IMAGES,
    POLYGON_CONFIG,
    assert_valid_polygon_region,
    image_bytes,
    keypoint,
    polygon_mask,
    prompt_arrays,
    rectangle,
)
from tests.support.masks import iou


@pytest.fixture(scope="module")
def polygon_project(label_studio, grabcut_backend) -> dict:
    ls = label_studio
    project = ls.create_project("polygons", POLYGON_CONFIG)
    (task,) = ls.upload_images(project, {"upload0.png": image_bytes("upload0.png")})
    ml = ls.connect_ml(project, grabcut_backend.url)
    assert ml["state"] == "CO", ml
    return {"project": project, "task": task, "ml": ml["id"]}


@pytest.mark.parametrize("prompt", ["keypoint", "rectangle"])
def test_polygon_suggestion_is_valid_and_survives_being_saved(label_studio, polygon_project, prompt):
    ls, p = label_studio, polygon_project
    image = IMAGES["upload0.png"]
    h, w = image.shape[:2]
    region = (
        keypoint(30, 40, (w, h), from_name="kp")
        if prompt == "keypoint"
        else rectangle(60, 52, 26, 34, (w, h), from_name="box")
    )
    answer = ls.interactive(p["ml"], p["task"], {"result": [region]})
    assert "errors" not in answer, answer
    polygons = answer["data"]["result"]
    assert len(polygons) == 1  # one disc, one connected component
    (polygon,) = polygons
    assert_valid_polygon_region(polygon, "poly", "Banana")
    assert (polygon["original_width"], polygon["original_height"]) == (w, h)

    engine = GrabCutEngine()
    single = prompt == "keypoint"
    want = engine.decode(engine.encode(image), **prompt_arrays([region]), multimask=single, best_only=single).masks[0]
    assert iou(polygon_mask(polygon["value"]["points"], w, h), want) >= 0.9

    # Accept + submit in the UI: the suggestion becomes an annotation, LS stores it as sent.
    saved = ls.post(
        f"/api/tasks/{p['task']}/annotations?project={p['project']}", {"result": [polygon], "lead_time": 1.0}
    )
    stored = [a for a in ls.task(p["task"])["annotations"] if a["id"] == saved["id"]]
    assert len(stored) == 1
    (back,) = stored[0]["result"]
    assert back["value"]["points"] == polygon["value"]["points"]
    assert back["value"]["closed"] is True and back["value"]["polygonlabels"] == ["Banana"]
    assert back["type"] == "polygonlabels" and back["from_name"] == "poly"


def test_prediction_with_polygons_is_accepted_by_ls_validation(label_studio, polygon_project):
    """LS's own validator (label_studio_sdk LabelInterface, flag forced on) accepts our regions as a prediction,
    and refuses a region it should refuse, so the check is live."""
    ls, p = label_studio, polygon_project
    h, w = IMAGES["upload0.png"].shape[:2]
    answer = ls.interactive(p["ml"], p["task"], {"result": [keypoint(72, 68, (w, h), from_name="kp")]})
    result = answer["data"]["result"]
    created = ls.post(
        "/api/predictions/",
        {"task": p["task"], "result": result, "model_version": "check-polygons", "score": answer["data"]["score"]},
    )
    assert created["result"] == result
    wrong = [dict(result[0], value=dict(result[0]["value"], polygonlabels=["NoSuchLabel"]))]
    ls.request(
        "POST",
        "/api/predictions/",
        expect=(400,),
        json={"task": p["task"], "result": wrong, "model_version": "check-polygons"},
    )
