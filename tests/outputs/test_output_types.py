"""Output types and SAM model types are each defined once; every reader agrees with the definer.

The output types (backend.outputs) drive the regions written, the label config's reading of
control tags, the interactive choice and the auto-annotate option; the model types
(sam_model) drive what SAM_MODEL may name.
"""

import numpy as np
import pytest

from backend.autoannotate.annotator import output_for, parse_options
from backend.engines.engine import EngineUnavailable, check_engine_choice
from backend.labelstudio.label_config import OUTPUT_TAG_TYPES, choose_output, parse_label_config
from backend.outputs import OUTPUT_TAGS, OUTPUT_TYPES, mask_to_regions
from backend.settings import Settings
from sam_model import MODEL_TYPES, OFFICIAL_CHECKPOINTS, build_sam
from sam_model.families import OFFICIAL_TYPES


def config_with(tag: str) -> str:
    return f'<View><Image name="img" value="$image"/><{tag} name="out" toName="img"><Label value="Car"/></{tag}></View>'


@pytest.mark.parametrize("kind", OUTPUT_TYPES)
def test_each_output_type_round_trips_through_label_studio_names(kind):
    """A control of the type's tag is chosen for that type, by a click and by auto-annotate, and
    the regions written for it carry the tag LS maps back to the same type."""
    config = parse_label_config(config_with(OUTPUT_TAGS[kind]))
    assert choose_output(config, "img", set(), None).output_type == kind
    assert output_for(config, parse_options({"output": kind}))[0].from_name == "out"
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    regions = mask_to_regions(
        mask,
        kind,
        from_name="out",
        to_name="img",
        label="Car",
        score=1.0,
        original_width=8,
        original_height=8,
        min_area_px=1,
    )
    assert regions and all(OUTPUT_TAG_TYPES[r["type"]] == kind and r["value"][r["type"]] == ["Car"] for r in regions)


def test_label_config_knows_exactly_the_output_types():
    assert sorted(OUTPUT_TAG_TYPES.values()) == sorted(OUTPUT_TYPES)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_buildable_model_type_is_a_valid_sam_model(model_type):
    check_engine_choice(Settings(sam_engine="sam", sam_model=model_type))


def test_an_unbuildable_model_type_is_refused_naming_the_official_ones():
    with pytest.raises(ValueError):
        build_sam("vit_q")
    with pytest.raises(EngineUnavailable) as err:
        check_engine_choice(Settings(sam_engine="sam", sam_model="vit_q"))
    listed = set(err.value.fix.removeprefix("set SAM_MODEL to one of ").split(", "))
    assert listed == set(OFFICIAL_TYPES) and listed <= set(OFFICIAL_CHECKPOINTS) and "tiny" not in listed
