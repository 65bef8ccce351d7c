"""Concept prompts from the labeling UI, answered with every matching instance in the image,
labelled: a phrase typed in a smart TextArea, or an example boxed with the "find all similar"
rectangle tool.

What Label Studio 1.23.2 sends (captured: tests/fixtures/ls-samples/predict_textarea_*.json,
predict_rectangle_*.json):
- A submitted TextArea: `params.context.result` holds one `textarea` region whose `value.text`
  lists every text submitted so far (the newest last) and whose `to_name` is the Image. No label
  (the one selected in the UI is not sent) and no image size. So the label comes from the text:
  "Dog: brown puppy" (a label of the output control, a colon, the phrase) -> Dog; else the label
  whose name the text holds as a word ("black dog" -> Dog); else the control's first label.
- A smart rectangle: the same region whatever key is held (Alt, Ctrl: no marker), so "find all
  similar" is a tool of its own: a smart RectangleLabels whose name is FIND_SIMILAR_CONTROL
  (default "similar"), with the labels the found objects should get. LS resends every box of
  the tool still on the image; the newest is the example.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from backend.concepts.labeller import ConceptLabeller, Selection
from backend.concepts.labelling import LabelledPhrase, split_phrases
from backend.errors import BadRequest
from backend.interactive.prompts import parse_context
from backend.labelstudio.label_config import LabelConfig, OutputTarget, choose_output

TEXT_TYPE = "textarea"


def text_region(context: Any) -> dict | None:
    """The context's TextArea region (the annotator typed a phrase), or None (a click or a box)."""
    result = context.get("result") if isinstance(context, dict) else None
    if not isinstance(result, list):
        return None
    return next((r for r in result if isinstance(r, dict) and r.get("type") == TEXT_TYPE), None)


def typed_text(region: dict) -> str:
    """The newest submitted text of a TextArea region; a 400 when it holds none."""
    value = region.get("value")
    texts = value.get("text") if isinstance(value, dict) else None
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest(
            "the TextArea region's value.text must be a non-empty list of strings",
            'send it as Label Studio does: {"value": {"text": ["red car"]}, "type": "textarea", ...}',
        )
    text = texts[-1].strip()
    if not text:
        raise BadRequest("the TextArea's text is empty", "type what to find, e.g. red car")
    return text


def label_and_phrases(text: str, labels: Sequence[str]) -> tuple[str, list[str]]:
    """The label the typed text asks for and its phrases (the module docstring's rules)."""
    by_name = {label.casefold(): label for label in labels}
    head, colon, rest = text.partition(":")
    if colon and head.strip().casefold() in by_name:
        return by_name[head.strip().casefold()], split_phrases(rest, "the typed text")
    phrases = split_phrases(text, "the typed text")
    words = set(re.findall(r"\w+", text.casefold()))
    named = [label for label in labels if (own := set(re.findall(r"\w+", label.casefold()))) and own <= words]
    return (named[0] if named else labels[0]), phrases


def answer_typed_text(labeller: ConceptLabeller, task: dict, context: dict, config: LabelConfig) -> dict:
    """The prediction for a phrase the annotator typed: every instance, with the label it asks for."""
    region = text_region(context)
    if region is None:
        raise BadRequest("the context holds no TextArea region")
    to_name = region.get("to_name")
    if not isinstance(to_name, str) or not to_name:
        raise BadRequest(
            "the TextArea region's to_name must name the Image tag",
            'give the TextArea toName="<the Image tag\'s name>" in the label config',
        )
    text = typed_text(region)
    target = choose_output(config, to_name, set(), None)
    labels = config.controls[target.from_name].labels
    label, phrases = label_and_phrases(text, labels)
    target = OutputTarget(target.from_name, target.to_name, target.output_type, label)
    backend, concepts = labeller.backend, labeller.concepts
    ref = backend.images.resolve(task, config.image(to_name).value_key)
    selection = Selection.uniform(concepts.default_thresholds().score)
    with labeller.slots.enter(), backend.cold_slots.enter():
        regions, score = labeller.from_phrases(ref, [LabelledPhrase(p, label) for p in phrases], target, selection)
    model_version = concepts.spec.predictions_id(backend.engine.model_id)
    return {"result": regions, "score": score, "model_version": model_version}


def similar_boxes(context: Any, control: str) -> list[dict]:
    """The context's boxes drawn with the find-all-similar tool (none: a click or a plain box)."""
    result = context.get("result") if isinstance(context, dict) else None
    if not isinstance(result, list):
        return []
    return [r for r in result if isinstance(r, dict) and r.get("from_name") == control]


def answer_similar(
    labeller: ConceptLabeller, task: dict, context: dict, config: LabelConfig, control: str, max_boxes: int
) -> dict:
    """The prediction for an example box: every similar object, with the example's label."""
    example = parse_context({"result": similar_boxes(context, control)[-1:]}, 1, max_boxes)
    box = example.prompts[0].box
    if box is None:
        raise BadRequest(f"the find-all-similar tool {control!r} must be a RectangleLabels", "draw a box with it")
    labeller.concepts.check_exemplars()  # before the image is fetched and its features computed
    target = choose_output(config, example.to_name, {control}, example.label)
    backend, concepts = labeller.backend, labeller.concepts
    ref = backend.images.resolve(task, config.image(example.to_name).value_key)
    selection = Selection.uniform(concepts.default_thresholds().score)
    with labeller.slots.enter(), backend.cold_slots.enter():
        regions, score = labeller.similar(
            ref,
            [float(v) for v in box],
            target,
            selection,
            expected_size=(example.original_width, example.original_height),
            image_rotation=example.image_rotation,
        )
    return {"result": regions, "score": score, "model_version": concepts.spec.predictions_id(backend.engine.model_id)}
