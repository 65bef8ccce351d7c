"""Auto-annotate options: what users may send, and the model_version that names a run's output."""

import inspect

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from segment_anything import SamAutomaticMaskGenerator

from backend.autoannotate.annotator import (
    AMG_OPTIONS,
    OPTIONS,
    AutoAnnotateOptions,
    option_defaults,
    options_from_setting,
    output_for,
    parse_options,
)
from backend.errors import BadRequest, Unprocessable
from backend.labelstudio.label_config import parse_label_config
from backend.web.openapi import openapi_spec


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"points_per_side": 0}, "outside"),
        ({"points_per_side": 2.5}, "integer"),
        ({"pred_iou_thresh": "high"}, "number"),
        ({"pred_iou_thresh": True}, "number"),
        ({"output": "mesh"}, "not one of"),
        ({"mode": "train"}, "not one of"),
        ({"mode": None}, "not one of"),  # only output and label may be null
        ({"amg_mode": None}, "not one of"),
        ({"points_per_sid": 16}, "unknown option"),
        ({"label": 3}, "string"),
        ({"max_masks": 0}, "outside"),
        ([], "JSON object"),
        ({"prompts": ["Cat"]}, "object"),
        ({"prompts": {"Cat": 3}}, "string"),
        ({"prompts": {"Cat": " . "}}, "no phrase"),
        ({"prompts": {"Cat": ""}}, "no phrase"),
        ({"thresholds": {"Cat": 1.5}}, "outside"),
        ({"thresholds": {"Cat": "high"}}, "number"),
        ({"score_threshold": -0.1}, "outside"),
        ({"overlap_iou": 2}, "outside"),
        ({"prompts": {f"label{i}": "x" for i in range(1001)}}, "at most 1000"),
    ],
)
def test_bad_options_are_refused_naming_the_option(raw, words):
    with pytest.raises(BadRequest) as err:
        parse_options(raw)
    assert words in err.value.message


def test_options_keep_types_and_defaults():
    options = parse_options({"points_per_side": 16.0, "output": "polygon", "min_area": 10})
    assert options.amg == {"points_per_side": 16} and isinstance(options.amg["points_per_side"], int)
    assert (options.mode, options.max_masks, options.amg_mode) == ("masks", 50, "fast")


def test_model_version_changes_with_what_changes_the_regions_only():
    base = parse_options({"points_per_side": 16})
    assert base.model_version("sam-x") == parse_options({"points_per_side": 16}).model_version("sam-x")
    assert base.model_version("sam-x") != parse_options({"points_per_side": 8}).model_version("sam-x")
    assert base.model_version("sam-x") != base.model_version("sam-y")
    warm_only = parse_options({"points_per_side": 16, "mode": "embeddings"})
    assert warm_only.model_version("sam-x") == base.model_version("sam-x")
    # Concept options do not rename an AMG run, nor AMG options a concepts run.
    assert parse_options({"points_per_side": 16, "overlap_iou": 0.5}).model_version("sam-x") == base.model_version(
        "sam-x"
    )
    concepts = parse_options({"mode": "concepts"})
    assert concepts.model_version("gd") == parse_options({"mode": "concepts", "amg_mode": "exact"}).model_version("gd")
    assert concepts.model_version("gd") != parse_options({"mode": "concepts", "overlap_iou": 0.5}).model_version("gd")
    assert "-concepts-" in concepts.model_version("gd") and "-amg-" in base.model_version("sam-x")


def test_setting_is_parsed_or_stops_the_start():
    assert options_from_setting("") == AutoAnnotateOptions()
    assert options_from_setting('{"points_per_side": 8}').amg == {"points_per_side": 8}
    with pytest.raises(ValueError, match="AUTO_ANNOTATE_OPTIONS"):
        options_from_setting("{points: 8}")
    with pytest.raises(ValueError, match="unknown option"):
        options_from_setting('{"points": 8}')


CONFIG = (
    '<View><Image name="img" value="$photo"/>'
    '<PolygonLabels name="poly" toName="img"><Label value="Car"/><Label value="Tree"/></PolygonLabels>'
    '<BrushLabels name="brush" toName="img"><Label value="Car"/></BrushLabels></View>'
)


def test_output_follows_the_config_unless_an_output_is_asked_for():
    config = parse_label_config(CONFIG)
    target, key = output_for(config, parse_options({}))
    assert (target.from_name, target.output_type, target.label, key) == ("brush", "brush", "Car", "photo")
    target, _ = output_for(config, parse_options({"output": "polygon", "label": "Tree"}))
    assert (target.from_name, target.output_type, target.label) == ("poly", "polygon", "Tree")
    with pytest.raises(Unprocessable, match="RectangleLabels"):
        output_for(config, parse_options({"output": "rectangle"}))


# ---- one definition: what the validation accepts is what /openapi.json describes ----------------


def json_schema(schema):
    """OpenAPI 3.0's `nullable` as plain JSON Schema, so jsonschema can judge values."""
    if isinstance(schema, list):
        return [json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: json_schema(v) for k, v in schema.items() if k not in ("nullable", "default", "description")}
    if schema.get("nullable"):
        out["type"] = [schema["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


DESCRIBED = jsonschema.Draft7Validator(  # draft 6+: 16.0 is an integer, as parse_options agrees
    json_schema(openapi_spec()["components"]["schemas"]["AutoAnnotateRequest"]["properties"]["options"])
)


def values_for(option):
    """Values at, just past and far past each edge, plus every wrong JSON type."""
    edges = []
    if option.kind is dict:
        edges = [
            {"Cat": "cat . kitten"},
            {"Cat": " . "},
            {"Cat": 0.5},
            {"Cat": 1.5},
            {"Cat": -0.1},
            {"Cat": None},
            {"Cat": True},
        ]
    elif option.kind is not str:
        step = 1 if option.kind is int else 1e-9
        edges = [
            option.low,
            option.high,
            option.low - step,
            option.high + step,
            (option.low + option.high) / 2,
            float(option.low),
            float(option.high),
            option.low - 10**30,
            option.high + 10**30,
        ]
    wrong = [None, True, "3", [], {}, 2.5, 10**400, *option.choices, "mesh", ""]
    return st.sampled_from(edges + wrong) | st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def option_dicts(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True))
    return {name: draw(values_for(OPTIONS[name])) for name in names}


@settings(max_examples=400, deadline=None)
@given(option_dicts())
def test_described_options_are_exactly_the_accepted_ones(raw):
    """A body the description allows is accepted, and one it forbids is refused with a 400."""
    described = DESCRIBED.is_valid(raw)
    try:
        parse_options(raw)
        accepted = True
    except BadRequest:
        accepted = False
    assert accepted == described, raw


def test_unknown_options_are_undescribed_and_refused():
    assert not DESCRIBED.is_valid({"points_per_sid": 16})


def test_amg_defaults_are_the_references_and_within_bounds():
    """The generator's defaults (what the description shows) are the official generator's, and
    every one of them passes our own validation: the bounds never exclude the reference."""
    reference = inspect.signature(SamAutomaticMaskGenerator).parameters
    defaults = option_defaults()
    for name in AMG_OPTIONS:
        assert defaults[name] == reference[name].default, name
    assert parse_options(defaults).amg == {name: defaults[name] for name in AMG_OPTIONS}
    assert parse_options(defaults).model_version("m") != AutoAnnotateOptions().model_version("m")  # sent = named
    assert {k: v for k, v in vars(parse_options(defaults)).items() if k != "amg"} == {
        k: v for k, v in vars(AutoAnnotateOptions()).items() if k != "amg"
    }
