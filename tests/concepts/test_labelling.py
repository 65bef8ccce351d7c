"""From labels to prompts and from instances to labelled regions: the rules the README documents."""

from __future__ import annotations

import pytest

from backend.concepts.interactive import label_and_phrases
from backend.concepts.labelling import (
    MAX_PHRASES,
    LabelledPhrase,
    box_iou,
    check_label_thresholds,
    keep_instances,
    label_phrases,
    split_phrases,
)
from backend.errors import BadRequest
from sam_model.concepts import Instance

LABELS = ("Cat", "Dog", "Traffic light")


def test_each_label_is_its_own_prompt_unless_mapped_to_phrases() -> None:
    phrases = label_phrases(LABELS, {"Dog": "dog . puppy", "Traffic light": " traffic signal "})
    assert phrases == [
        LabelledPhrase("Cat", "Cat"),
        LabelledPhrase("dog", "Dog"),
        LabelledPhrase("puppy", "Dog"),
        LabelledPhrase("traffic signal", "Traffic light"),
    ]


@pytest.mark.parametrize(
    ("prompts", "words"),
    [
        ({"Horse": "horse"}, "'Horse'"),
        ({"Dog": " . "}, "no phrase"),
        ({"Dog": "x" * 1001}, "longer than 1000"),
        ({"Dog": "y" * 201}, "longer than 200"),
        ({"Dog": " . ".join(["dog"] * MAX_PHRASES)}, "exceed the limit"),
    ],
)
def test_a_bad_mapping_is_a_400_naming_what_is_wrong(prompts, words) -> None:
    with pytest.raises(BadRequest) as err:
        label_phrases(LABELS, prompts)
    assert words in err.value.message


def test_an_unknown_label_in_the_mapping_lists_the_known_ones() -> None:
    with pytest.raises(BadRequest) as err:
        label_phrases(LABELS, {"Horse": "horse"})
    assert "Cat, Dog, Traffic light" in err.value.fix
    with pytest.raises(BadRequest):
        check_label_thresholds(LABELS, {"horse": 0.3})
    check_label_thresholds(LABELS, {"Dog": 0.3})


def test_phrases_split_at_the_grounding_separators() -> None:
    assert split_phrases("red car. blue truck ? bus", "t") == ["red car", "blue truck", "bus"]
    with pytest.raises(BadRequest):
        split_phrases(3, "t")  # type: ignore[arg-type]


def instance(index: int, box: tuple[float, float, float, float], score: float) -> Instance:
    return Instance(index, box, score)


PHRASES = [LabelledPhrase("cat", "Cat"), LabelledPhrase("dog", "Dog")]


def test_overlapping_instances_keep_the_surer_label() -> None:
    cat = instance(0, (0, 0, 10, 10), 0.6)
    dog_same_object = instance(1, (0, 0, 10, 9), 0.8)  # IoU 0.9 with the cat
    dog_elsewhere = instance(1, (20, 20, 30, 30), 0.5)
    kept = keep_instances([cat, dog_same_object, dog_elsewhere], PHRASES, lambda _: 0.0, 0.7, 50)
    assert [(k.label, k.instance) for k in kept] == [("Dog", dog_same_object), ("Dog", dog_elsewhere)]


def test_overlap_at_most_the_limit_keeps_both() -> None:
    a, b = instance(0, (0, 0, 10, 10), 0.9), instance(1, (5, 0, 15, 10), 0.8)  # IoU 1/3
    assert len(keep_instances([a, b], PHRASES, lambda _: 0.0, 1 / 3, 50)) == 2
    assert len(keep_instances([a, b], PHRASES, lambda _: 0.0, 0.3, 50)) == 1


def test_thresholds_are_per_label_and_the_cap_keeps_the_best() -> None:
    found = [instance(0, (i * 20, 0, i * 20 + 10, 10), 0.1 * i) for i in range(1, 6)]
    found += [instance(1, (0, 40, 10, 50), 0.25)]
    thresholds = {"Cat": 0.3, "Dog": 0.2}
    kept = keep_instances(found, PHRASES, thresholds.__getitem__, 0.7, 50)
    assert [round(k.instance.score, 2) for k in kept] == [0.5, 0.4, 0.3, 0.25]
    capped = keep_instances(found, PHRASES, thresholds.__getitem__, 0.7, 2)
    assert [round(k.instance.score, 2) for k in capped] == [0.5, 0.4]


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


@pytest.mark.parametrize(
    ("text", "label", "phrases"),
    [
        ("Dog: brown puppy . cat", "Dog", ["brown puppy", "cat"]),
        ("dog:cat", "Dog", ["cat"]),
        ("black dog", "Dog", ["black dog"]),
        ("a traffic light", "Traffic light", ["a traffic light"]),
        ("red car", "Cat", ["red car"]),  # no label named: the control's first
        ("Horse: pony", "Cat", ["Horse: pony"]),  # not a label: the colon is part of the phrase
        ("hotdog", "Cat", ["hotdog"]),  # a word, not a substring
    ],
)
def test_the_typed_text_names_its_label(text, label, phrases) -> None:
    assert label_and_phrases(text, LABELS) == (label, phrases)
