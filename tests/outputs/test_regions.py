"""LS result dicts: the field set LS stores, values LS (and the SDK) decode back to the mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from backend.outputs.regions import brush_region, mask_to_regions, polygon_regions, rectangle_region
from tests.support.samples import sample

ARGS = dict(from_name="tag", to_name="image", label="Banana", score=0.87, original_width=320, original_height=240)
EXTRA_KEYS = {"score", "readonly"}  # accepted by LS on predictions; not in what it stored back


def stored_brush() -> dict:
    return sample("stored_prediction_task.json")[0]["result"][0]


def mask() -> np.ndarray:
    m = np.zeros((240, 320), dtype=bool)
    m[50:120, 100:220] = True
    m[150:200, 20:60] = True
    return m


def test_brush_region_has_the_stored_shape_and_decodes_to_the_mask() -> None:
    region = brush_region(mask(), **ARGS, region_id="abc")
    sample = stored_brush()
    assert set(region) == set(sample) | EXTRA_KEYS
    assert set(region["value"]) == set(sample["value"])
    assert region["type"] == sample["type"] == "brushlabels"
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Banana"]
    assert region["id"] == "abc" and region["score"] == 0.87 and region["readonly"] is False
    rgba = decode_rle(region["value"]["rle"]).reshape(240, 320, 4)
    assert np.array_equal(rgba[:, :, 3] == 255, mask())
    json.dumps(region)


def test_brush_mask_must_be_at_original_size() -> None:
    with pytest.raises(ValueError):
        brush_region(np.zeros((240, 321), dtype=bool), **ARGS)


def test_polygon_regions_one_per_component() -> None:
    regions = polygon_regions(mask(), **ARGS)
    assert len(regions) == 2
    for region in regions:
        assert set(region) == set(stored_brush()) | EXTRA_KEYS
        assert region["type"] == "polygonlabels"
        assert set(region["value"]) == {"points", "closed", "polygonlabels"}
        assert region["value"]["closed"] is True and region["value"]["polygonlabels"] == ["Banana"]
        points = np.asarray(region["value"]["points"])
        assert points.ndim == 2 and points.shape[1] == 2 and len(points) >= 3
    big = np.asarray(regions[0]["value"]["points"]) * [3.2, 2.4]
    assert sorted(map(tuple, np.round(big, 9))) == [(100, 50), (100, 120), (220, 50), (220, 120)]
    assert regions[0]["id"] != regions[1]["id"]
    json.dumps(regions)


def test_rectangle_region_bounds_every_pixel() -> None:
    region = rectangle_region(mask(), **ARGS)
    assert region["type"] == "rectanglelabels"
    value = region["value"]
    assert value["rectanglelabels"] == ["Banana"] and value["rotation"] == 0
    x0, y0 = value["x"] * 3.2, value["y"] * 2.4
    x1, y1 = x0 + value["width"] * 3.2, y0 + value["height"] * 2.4
    assert np.allclose([x0, y0, x1, y1], [20, 50, 220, 200])
    assert all(type(value[k]) is float for k in ("x", "y", "width", "height"))
    assert rectangle_region(np.zeros((240, 320), dtype=bool), **ARGS) is None


@pytest.mark.parametrize(
    "output_type,kind", [("brush", "brushlabels"), ("polygon", "polygonlabels"), ("rectangle", "rectanglelabels")]
)
def test_dispatcher(output_type: str, kind: str) -> None:
    regions = mask_to_regions(mask(), output_type, **ARGS)
    assert regions and all(r["type"] == kind for r in regions)
    assert mask_to_regions(np.zeros((240, 320), dtype=bool), output_type, **ARGS) == []


def test_dispatcher_refuses_unknown_type() -> None:
    with pytest.raises(ValueError):
        mask_to_regions(mask(), "ellipse", **ARGS)


def test_ids_look_like_ls_ids() -> None:
    ids = {brush_region(mask(), **ARGS)["id"] for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == 10 and i.isalnum() for i in ids)
