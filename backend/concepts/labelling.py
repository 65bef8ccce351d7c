"""From a project's labels to text prompts, and from found instances to labelled ones.

Each label of the output control is asked for by its own name, unless the run's `prompts`
maps it to other phrases ("Car": "car . truck": the phrases are split at '.', the
separator Grounding DINO's captions use, and each is one prompt). Every found instance gets
the label of the phrase it answers.

The overlap rule (README, "Labelled pre-annotation"): instances are taken best score first;
one whose box overlaps an instance already taken by more than `overlap_iou` (intersection
over union of the two boxes) is dropped, whatever their labels: one object, one region, with
the label the engine is surest of. Then the `max_masks` best are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from backend.errors import BadRequest
from sam_model.concepts import Instance

MAX_PHRASE_CHARS = 200  # what the engines accept per prompt (sam_model.concepts.engine)
MAX_TEXT_CHARS = 1000  # a typed text or a label's mapping, before it is split into phrases
MAX_PHRASES = 100  # prompts per image: each is one pass of the engine's text and decoder stages


@dataclass(frozen=True)
class LabelledPhrase:
    phrase: str
    label: str


@dataclass(frozen=True)
class LabelledInstance:
    instance: Instance
    label: str


def split_phrases(text: str, what: str) -> list[str]:
    """'car . truck' -> ['car', 'truck']; empty, over-long or phrase-less text is a 400 naming `what`."""
    if not isinstance(text, str):
        raise BadRequest(f"{what} must be a string, got {type(text).__name__}", "send a phrase, e.g. red car")
    if len(text) > MAX_TEXT_CHARS:
        raise BadRequest(f"{what} is longer than {MAX_TEXT_CHARS} characters", "type a short noun phrase, e.g. red car")
    phrases = [part.strip() for part in text.replace("?", ".").split(".") if part.strip()]
    if not phrases:
        raise BadRequest(f"{what} holds no phrase", "type what to find, e.g. red car")
    if len(phrases) > MAX_PHRASES:
        raise BadRequest(f"{len(phrases)} phrases of {what} exceed the limit of {MAX_PHRASES}", "ask for fewer")
    for phrase in phrases:
        if len(phrase) > MAX_PHRASE_CHARS:
            raise BadRequest(
                f"a phrase of {what} is longer than {MAX_PHRASE_CHARS} characters",
                "shorten it, or split it into phrases with '.'",
            )
    return phrases


def label_phrases(labels: Sequence[str], prompts: Mapping[str, str]) -> list[LabelledPhrase]:
    """The prompts of a labelled run: each label's own name, or its phrases in `prompts`."""
    unknown = sorted(set(prompts) - set(labels))
    if unknown:
        raise BadRequest(
            f"option 'prompts' names {', '.join(map(repr, unknown))}, not a label of the output control",
            f"its labels are: {', '.join(labels)}",
        )
    if not labels:
        raise BadRequest("the output control has no labels to prompt with", "add <Label value=...> to it")
    phrases = []
    for label in labels:
        # A label's own name is one prompt: its '.' and '?' (phrase breaks to the engines) become spaces.
        text = prompts[label] if label in prompts else " ".join(label.replace("?", " ").replace(".", " ").split())
        phrases += [LabelledPhrase(p, label) for p in split_phrases(text, f"the prompt of label {label!r}")]
    if len(phrases) > MAX_PHRASES:
        raise BadRequest(f"{len(phrases)} prompts exceed the limit of {MAX_PHRASES} per image", "map fewer phrases")
    return phrases


def check_label_thresholds(labels: Sequence[str], thresholds: Mapping[str, float]) -> None:
    unknown = sorted(set(thresholds) - set(labels))
    if unknown:
        raise BadRequest(
            f"option 'thresholds' names {', '.join(map(repr, unknown))}, not a label of the output control",
            f"its labels are: {', '.join(labels)}",
        )


def keep_instances(
    instances: Sequence[Instance],
    phrases: Sequence[LabelledPhrase],
    threshold_of: Callable[[str], float],
    overlap_iou: float,
    cap: int,
) -> list[LabelledInstance]:
    """Label each instance, drop those under their label's threshold, resolve overlaps, cap."""
    labelled = [
        LabelledInstance(instance, phrases[instance.prompt_index].label)
        for instance in instances
        if instance.score >= threshold_of(phrases[instance.prompt_index].label)
    ]
    labelled.sort(key=lambda item: item.instance.score, reverse=True)
    kept: list[LabelledInstance] = []
    for item in labelled:
        if all(box_iou(item.instance.box_xyxy, other.instance.box_xyxy) <= overlap_iou for other in kept):
            kept.append(item)
            if len(kept) == cap:
                break
    return kept


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two xyxy boxes (0 for two empty ones)."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
