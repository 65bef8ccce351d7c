"""Label config -> output control, and LS context -> decoder prompts (pure functions, no server)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from backend.errors import BadRequest, Unprocessable
from backend.interactive.prompts import parse_context
from backend.labelstudio.label_config import choose_output, parse_label_config
from tests.support.samples import sample

CONFIG = sample("predict_interactive_request.json")["label_config"]
MULTI = sample("ui_multi_click_task4.json")


def kp(x, y, positive=True, **extra):
    region = {
        "original_width": 400,
        "original_height": 200,
        "image_rotation": 0,
        "from_name": "kp",
        "to_name": "img",
        "type": "keypointlabels",
        "value": {"x": x, "y": y, "keypointlabels": ["Cat"]},
        "is_positive": positive,
    }
    region.update(extra)
    return region


def rect(x, y, w, h, **value):
    return {
        "original_width": 400,
        "original_height": 200,
        "from_name": "rect",
        "to_name": "img",
        "type": "rectanglelabels",
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": ["Cat"], **value},
    }


def parse(*regions, points=64, boxes=16):
    return parse_context({"result": list(regions)}, points, boxes)


# ---- label config ---------------------------------------------------------------------------


def test_sample_config_sends_masks_to_the_brush_with_the_prompt_label():
    config = parse_label_config(CONFIG)
    assert config.images["image"].value_key == "image"
    target = choose_output(config, "image", {"tag2"}, "Orange")
    assert (target.from_name, target.output_type, target.label) == ("tag", "brush", "Orange")


def test_label_missing_from_output_control_falls_back_to_its_first_label():
    target = choose_output(parse_label_config(CONFIG), "image", {"tag2"}, "Apple")
    assert target.label == "Banana"


def cfg(*controls: str) -> str:
    return '<View><Image name="img" value="$pic"/>' + "".join(controls) + "</View>"


KP = '<KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/></KeyPointLabels>'
SMART_RECT = '<RectangleLabels name="rect" toName="img" smart="true"><Label value="Cat"/></RectangleLabels>'


def test_polygon_when_no_brush_and_rectangle_only_when_not_the_prompt_itself():
    assert (
        choose_output(
            parse_label_config(
                cfg(KP, '<PolygonLabels name="poly" toName="img"><Label value="Cat"/></PolygonLabels>', SMART_RECT)
            ),
            "img",
            {"kp"},
            "Cat",
        ).output_type
        == "polygon"
    )
    boxes_only = parse_label_config(
        cfg(KP, SMART_RECT, '<RectangleLabels name="out" toName="img"><Label value="Dog"/></RectangleLabels>')
    )
    target = choose_output(boxes_only, "img", {"kp"}, "Cat")
    assert (target.from_name, target.output_type, target.label) == ("out", "rectangle", "Dog")  # non-smart preferred
    with pytest.raises(Unprocessable, match="BrushLabels") as refused:
        choose_output(parse_label_config(cfg(SMART_RECT)), "img", {"rect"}, "Cat")
    assert '<BrushLabels name="mask" toName="img">' in refused.value.fix


def test_controls_bound_to_another_image_do_not_count():
    xml = (
        '<View><Image name="a" value="$a"/><Image name="b" value="$b"/>'
        '<BrushLabels name="mask_b" toName="b"><Label value="X"/></BrushLabels></View>'
    )
    with pytest.raises(Unprocessable):
        choose_output(parse_label_config(xml), "a", set(), None)
    assert choose_output(parse_label_config(xml), "b", set(), None).from_name == "mask_b"


@pytest.mark.parametrize(
    "xml",
    [
        '<!DOCTYPE x [<!ENTITY a "aaaa">]><View>&a;</View>',
        "<View><Image name='i' value='$i'>",
        "",
        ["<View/>"],
        {"a": 1},
        42,
    ],
)
def test_hostile_or_broken_configs_are_refused(xml):
    with pytest.raises(BadRequest):
        parse_label_config(xml)


# ---- prompts --------------------------------------------------------------------------------


def test_sample_click_becomes_pixels_of_the_original_image():
    ps = parse_context(sample("predict_interactive_request.json")["params"]["context"], 64, 16)
    np.testing.assert_allclose(ps.prompts[0].point_coords, [[160.0, 120.0]])
    assert ps.prompts[0].point_labels.tolist() == [1] and ps.single_point and ps.previous is None
    assert (ps.original_width, ps.original_height, ps.label, ps.to_name) == (320, 240, "Banana", "image")


def test_multi_click_sample_polarity_and_refinement_prefix():
    ps = parse_context(MULTI[2]["context"], 64, 16)
    prompt = ps.prompts[0]
    assert prompt.point_labels.tolist() == [1, 1, 0]  # Alt+click: is_positive false
    np.testing.assert_allclose(prompt.point_coords[2], [368 * 0.8834861780035627, 240 * 0.11608497723823978], rtol=1e-6)
    np.testing.assert_array_equal(ps.previous.point_coords, prompt.point_coords[:2])  # the earlier click's prompt
    assert not ps.single_point


def test_value_positive_is_read_and_missing_polarity_means_positive():
    a = kp(10, 10, positive=None)
    del a["is_positive"]
    b = kp(20, 20)
    del b["is_positive"]
    b["value"]["positive"] = False
    assert parse(a, b).prompts[0].point_labels.tolist() == [1, 0]


def test_points_and_a_box_combine_and_several_boxes_give_one_prompt_each():
    ps = parse(rect(10, 10, 50, 50), kp(30, 30))
    np.testing.assert_allclose(ps.prompts[0].box, [40, 20, 240, 120])
    assert ps.prompts[0].n_points == 1 and ps.previous.box is not None and ps.previous.n_points == 0
    assert parse(kp(30, 30), rect(10, 10, 50, 50)).previous.box is None  # box added last: prefix is the point
    many = parse(rect(0, 0, 10, 10), rect(50, 50, 10, 10))
    assert len(many.prompts) == 2 and many.previous is None
    with pytest.raises(BadRequest, match="one rectangle"):
        parse(rect(0, 0, 10, 10), rect(50, 50, 10, 10), kp(5, 5))


def test_rotated_rectangle_becomes_the_box_around_its_corners():
    box = parse(rect(25, 25, 25, 50, rotation=90)).prompts[0].box  # 100x100 px square turned about (100, 50)
    np.testing.assert_allclose(box, [0, 50, 100, 150], atol=1e-4)


def test_slightly_outside_is_clamped_far_outside_is_refused():
    np.testing.assert_allclose(parse(kp(-1.5, 101)).prompts[0].point_coords, [[0, 200]])
    with pytest.raises(BadRequest, match="outside the image"):
        parse(kp(150, 50))
    with pytest.raises(BadRequest, match="outside the image"):
        parse(rect(50, 50, 80, 10))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["value"].update(x="12"), "must be a number"),
        (lambda r: r["value"].update(x=True), "must be a number"),
        (lambda r: r["value"].update(x=math.nan), "finite"),
        (lambda r: r["value"].update(y=math.inf), "finite"),
        (lambda r: r["value"].update(x=1e300), "finite"),
        (lambda r: r.pop("original_width"), "original_width"),
        (lambda r: r.update(original_height=0), "original_height"),
        (lambda r: r.update(original_height=2.5), "original_height"),
        (lambda r: r.update(type="polygonlabels"), "keypointlabels or rectanglelabels"),
        (lambda r: r.update(is_positive="yes"), "true or false"),
        (lambda r: r.update(value=[1, 2]), "value object"),
    ],
)
def test_bad_regions_are_400_with_a_reason(mutate, message):
    region = kp(50, 50)
    mutate(region)
    with pytest.raises(BadRequest, match=message):
        parse(region)


@pytest.mark.parametrize("context", [None, {}, {"result": []}, {"result": "x"}, {"result": [1]}])
def test_empty_or_malformed_context_is_refused(context):
    with pytest.raises(BadRequest):
        parse_context(context, 64, 16)


def test_limits_and_mixed_images():
    with pytest.raises(BadRequest, match="limit of 2"):
        parse(kp(1, 1), kp(2, 2), kp(3, 3), points=2)
    with pytest.raises(BadRequest, match="limit of 1"):
        parse(rect(1, 1, 2, 2), rect(5, 5, 2, 2), boxes=1)
    other = kp(5, 5, to_name="other")
    with pytest.raises(BadRequest, match="same image"):
        parse(kp(1, 1), other)
    resized = copy.deepcopy(kp(5, 5))
    resized["original_width"] = 401
    with pytest.raises(BadRequest, match="same original_width"):
        parse(kp(1, 1), resized)


@pytest.mark.parametrize(
    "output, missing",
    [
        ("polygon", "<PolygonLabels> control"),
        (None, "BrushLabels, PolygonLabels or RectangleLabels control"),
    ],
)
def test_missing_auto_annotate_output_control_is_a_422_that_reads_well(output, missing):
    from backend.autoannotate.annotator import output_for, parse_options

    config = parse_label_config(
        '<View><Image name="img" value="$image"/>'
        '<KeyPointLabels name="kp" toName="img" smart="true"><Label value="Cat"/></KeyPointLabels></View>'
    )
    with pytest.raises(Unprocessable) as refused:
        output_for(config, parse_options({"output": output} if output else None))
    assert refused.value.status == 422
    assert refused.value.message == f"the project's label config has no {missing} with labels bound to an <Image>"
