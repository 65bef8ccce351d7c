"""Auto-annotate options: what users may send, and the model_version that names a run's output."""
import pytest

from backend.autoannotate.annotator import (
    AutoAnnotateOptions,
    options_from_setting,
    output_for,
    parse_options,
)
from backend.errors import BadRequest, Unprocessable
from backend.labelstudio.label_config import parse_label_config


@pytest.mark.parametrize("raw, words", [
    ({"points_per_side": 0}, "outside"),
    ({"points_per_side": 2.5}, "integer"),
    ({"pred_iou_thresh": "high"}, "number"),
    ({"pred_iou_thresh": True}, "number"),
    ({"output": "mesh"}, "not one of"),
    ({"mode": "train"}, "not one of"),
    ({"points_per_sid": 16}, "unknown option"),
    ({"label": 3}, "string"),
    ({"max_masks": 0}, "outside"),
    ([], "JSON object"),
])
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


def test_setting_is_parsed_or_stops_the_start():
    assert options_from_setting("") == AutoAnnotateOptions()
    assert options_from_setting('{"points_per_side": 8}').amg == {"points_per_side": 8}
    with pytest.raises(ValueError, match="AUTO_ANNOTATE_OPTIONS"):
        options_from_setting("{points: 8}")
    with pytest.raises(ValueError, match="unknown option"):
        options_from_setting('{"points": 8}')


CONFIG = ('<View><Image name="img" value="$photo"/>'
          '<PolygonLabels name="poly" toName="img"><Label value="Car"/><Label value="Tree"/></PolygonLabels>'
          '<BrushLabels name="brush" toName="img"><Label value="Car"/></BrushLabels></View>')


def test_output_follows_the_config_unless_an_output_is_asked_for():
    config = parse_label_config(CONFIG)
    target, key = output_for(config, parse_options({}))
    assert (target.from_name, target.output_type, target.label, key) == ("brush", "brush", "Car", "photo")
    target, _ = output_for(config, parse_options({"output": "polygon", "label": "Tree"}))
    assert (target.from_name, target.output_type, target.label) == ("poly", "polygon", "Tree")
    with pytest.raises(Unprocessable, match="RectangleLabels"):
        output_for(config, parse_options({"output": "rectangle"}))
