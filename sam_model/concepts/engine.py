"""The concept-engine contract: text (or an exemplar box) in, every matching instance out.

Pre-annotation turns each label of a project into a text prompt; an engine finds every
instance of each prompt in an image. `features(image)` runs the image backbone once;
`find(features, prompts)` then costs only the prompt-dependent stages, for all prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sam_model.concepts.features import ConceptFeatures

MAX_PROMPT_CHARS = 200


@dataclass(frozen=True)
class Instance:
    """One found instance: which prompt it answers, where it is, how sure the engine is.

    `box_xyxy` is in pixels of the original image (clipped to it); `mask` is a bool (H, W)
    array of the original image for engines that segment (SAM 3), None for box-only ones
    (Grounding DINO: the served SAM model turns the box into a mask).
    """

    prompt_index: int
    box_xyxy: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class Thresholds:
    """`score`: keep instances scoring above it; `mask`: SAM 3's mask-probability cut-off."""

    score: float
    mask: float = 0.5

    def __post_init__(self) -> None:
        for name in ("score", "mask"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name} must be a number in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))


class ConceptEngine(Protocol):
    """What the backend needs of an engine (`GroundingDinoEngine`, `Sam3Engine`)."""

    name: str
    model_id: str
    default_thresholds: Thresholds

    def features(self, image: np.ndarray) -> ConceptFeatures:
        """The image's backbone output, reusable for any prompts (one backbone pass)."""
        ...

    def find(
        self, features: ConceptFeatures, prompts: Sequence[str], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        """Every instance of every prompt; `Instance.prompt_index` indexes `prompts`."""
        ...

    def find_similar(
        self, features: ConceptFeatures, exemplar_box: Sequence[float], thresholds: Thresholds | None = None
    ) -> list[Instance]:
        """Every instance like the one in `exemplar_box` (xyxy pixels); prompt_index 0.
        Engines without exemplar prompts raise ValueError."""
        ...


def check_thresholds(thresholds: Thresholds | None, default: Thresholds) -> Thresholds:
    """`thresholds`, or the engine's `default` for None; ValueError for anything else."""
    if thresholds is None:
        return default
    if not isinstance(thresholds, Thresholds):
        raise ValueError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
    return thresholds


def check_prompts(prompts: Sequence[str]) -> list[str]:
    """Prompts as stripped, non-empty strings (at least one); ValueError otherwise."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    checked = []
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"each prompt must be a non-empty string, got {prompt!r}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt {prompt[:40]!r}... is longer than {MAX_PROMPT_CHARS} characters")
        checked.append(prompt.strip())
    return checked


def check_features(features: ConceptFeatures, model_id: str) -> ConceptFeatures:
    """Features made by this engine's model; ValueError for anything else."""
    if not isinstance(features, ConceptFeatures):
        raise ValueError(f"features must be ConceptFeatures, got {type(features).__name__}")
    if features.model_id != model_id:
        raise ValueError(f"features were computed by {features.model_id!r}, not {model_id!r}")
    return features


def check_exemplar_box(box: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """An xyxy box with positive area inside an image of `size` (h, w); ValueError otherwise."""
    values = np.asarray(box, dtype=np.float64) if _is_numeric(box) else None
    if values is None or values.shape != (4,):
        raise ValueError(f"exemplar_box must be four numbers x0, y0, x1, y1, got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in values)
    h, w = size
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ValueError("exemplar_box must be finite")
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"exemplar_box {box!r} must have x0 < x1, y0 < y1 and lie inside the {w}x{h} image")
    return x0, y0, x1, y1


def clip_box(box: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """An xyxy box clipped to an image of `size` (h, w), as plain floats."""
    h, w = size
    x0, y0, x1, y1 = (float(v) for v in box)
    return min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)


def _is_numeric(box: object) -> bool:
    try:
        values = np.asarray(box)
    except (TypeError, ValueError):
        return False
    return values.dtype.kind in "iuf"
