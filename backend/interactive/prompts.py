"""Turn LS's interactive context (`params.context.result`) into SAM decoder prompts.

What LS 1.23 sends (see tests/fixtures/ls-samples): every not-yet-accepted smart region of the
current label, in creation order. Keypoints carry `value.x`/`value.y` in percent of
`original_width`/`original_height`; their polarity is top-level `is_positive` (Alt+click
sends false) or, in newer clients, `value.positive`; missing means positive. Rectangles
carry `x`, `y`, `width`, `height` in percent and an optional `rotation` in degrees about
their top-left corner.

Image rotation: the frontend rotates every region back by `-image_rotation` before
serialising and reports the *natural* (unrotated) image size as original_width/height,
so coordinates are already relative to the unrotated image we fetch and encode.
`image_rotation` only records how the annotator was viewing it. We therefore use the
coordinates as they are and echo `image_rotation` on the output regions; a mask computed on
the unrotated image then lands exactly where the annotator clicked in the rotated view.
(All captured samples have rotation 0; the serialisation rule is the frontend's.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from backend.errors import BadRequest
from backend.validation import number

# Clicks a little outside the image (a cursor on the border) are clamped; farther is a bug.
OUTSIDE_TOLERANCE_PCT = 3.0
MAX_IMAGE_SIDE = 100_000
MAX_COORDINATE = 1e7  # any number LS sends (percent, degrees) is far smaller; bigger is a bug or an attack
_LIMIT_FIX = "raise MAX_PROMPT_POINTS / MAX_PROMPT_BOXES or accept some regions first"


@dataclass(frozen=True)
class Prompt:
    """One decoder call: points and/or a box, in pixels of the original (unrotated) image."""

    point_coords: np.ndarray | None  # (N, 2) float32 xy
    point_labels: np.ndarray | None  # (N,) int32, 1 positive / 0 negative
    box: np.ndarray | None  # (4,) float32 xyxy

    @property
    def n_points(self) -> int:
        return 0 if self.point_labels is None else len(self.point_labels)


@dataclass(frozen=True)
class PromptSet:
    """Everything the interactive path needs from one context."""

    prompts: tuple[Prompt, ...]
    to_name: str
    prompt_controls: frozenset[str]
    label: str | None
    original_width: int
    original_height: int
    image_rotation: int | float
    previous: Prompt | None  # the single prompt minus its newest region: whose logits refine this one

    @property
    def single_point(self) -> bool:
        only = self.prompts[0]
        return len(self.prompts) == 1 and only.box is None and only.n_points == 1


def _number(value: Any, what: str) -> float:
    return number(value, what, -MAX_COORDINATE, MAX_COORDINATE)


def _rotation(region: dict) -> int | float:
    """Echoed on output regions exactly as LS sent it (degrees; 0 when absent)."""
    angle = _number(region.get("image_rotation", 0) or 0, "context.result[0].image_rotation")
    return int(angle) if angle.is_integer() else angle


def _size(region: dict, key: str, index: int) -> int:
    if key not in region:
        raise BadRequest(
            f"context.result[{index}] has no {key}", "LS sends original_width/original_height with every region"
        )
    return int(number(region[key], f"context.result[{index}].{key}", 1, MAX_IMAGE_SIDE, whole=True))


def _percent(value: Any, what: str) -> float:
    """A coordinate in percent; slightly outside 0..100 is clamped, far outside is refused."""
    pct = _number(value, what)
    if not -OUTSIDE_TOLERANCE_PCT <= pct <= 100 + OUTSIDE_TOLERANCE_PCT:
        raise BadRequest(f"{what}={pct} is outside the image (percent coordinates must lie in 0..100)")
    return min(max(pct, 0.0), 100.0)


def _label(value: dict, kind: str) -> str | None:
    labels = value.get(kind) or value.get("labels")
    if isinstance(labels, list) and labels and isinstance(labels[0], str):
        return labels[0]
    return None


def _point(region: dict, value: dict, w: int, h: int, i: int) -> tuple[float, float, int]:
    x = _percent(value.get("x"), f"context.result[{i}].value.x") / 100 * w
    y = _percent(value.get("y"), f"context.result[{i}].value.y") / 100 * h
    polarity = region.get("is_positive", value.get("positive", True))
    if polarity is None:
        polarity = True
    if not isinstance(polarity, bool):
        raise BadRequest(f"context.result[{i}].is_positive must be true or false, got {polarity!r}")
    return x, y, int(polarity)


def _box(value: dict, w: int, h: int, i: int) -> tuple[float, float, float, float]:
    """Axis-aligned xyxy pixels; a rotated rectangle gives the box around its corners."""
    x = _percent(value.get("x"), f"context.result[{i}].value.x") / 100 * w
    y = _percent(value.get("y"), f"context.result[{i}].value.y") / 100 * h
    bw = _number(value.get("width"), f"context.result[{i}].value.width") / 100 * w
    bh = _number(value.get("height"), f"context.result[{i}].value.height") / 100 * h
    if bw < 0 or bh < 0:
        raise BadRequest(f"context.result[{i}] has a negative width or height")
    angle = math.radians(_number(value.get("rotation", 0) or 0, f"context.result[{i}].value.rotation"))
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in ((0, 0), (bw, 0), (0, bh), (bw, bh))]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
    slack_x, slack_y = OUTSIDE_TOLERANCE_PCT / 100 * w, OUTSIDE_TOLERANCE_PCT / 100 * h
    if x0 < -slack_x or y0 < -slack_y or x1 > w + slack_x or y1 > h + slack_y:
        raise BadRequest(f"context.result[{i}] is a rectangle reaching outside the image")
    return max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))


def _prompt(points: list[tuple[float, float, int]], box: tuple[float, float, float, float] | None) -> Prompt:
    coords = np.array([p[:2] for p in points], dtype=np.float32).reshape(-1, 2) if points else None
    labels = np.array([p[2] for p in points], dtype=np.int32) if points else None
    return Prompt(coords, labels, None if box is None else np.array(box, dtype=np.float32))


def parse_context(context: Any, max_points: int, max_boxes: int) -> PromptSet:
    """Validate `params.context` and build the decoder prompts.

    All keypoints go into one prompt; with one rectangle they combine (points refine the box).
    Several rectangles without points give one mask per rectangle. Points with several
    rectangles are refused: which box a point refines would be a guess.
    """
    result = context.get("result") if isinstance(context, dict) else None
    if not isinstance(result, list) or not result:
        raise BadRequest("params.context.result must be a non-empty list of regions")
    points: list[tuple[float, float, int]] = []
    boxes: list[tuple[float, float, float, float]] = []
    first = result[0] if isinstance(result[0], dict) else {}
    to_name = first.get("to_name")
    if not isinstance(to_name, str) or not to_name:
        raise BadRequest("context.result[0].to_name must name the Image tag")
    w, h = _size(first, "original_width", 0), _size(first, "original_height", 0)
    controls: set[str] = set()
    label = None
    for i, region in enumerate(result):
        if not isinstance(region, dict) or not isinstance(region.get("value"), dict):
            raise BadRequest(f"context.result[{i}] must be an object with a value object")
        if region.get("to_name") != to_name:
            raise BadRequest("all regions in context.result must point at the same image (to_name)")
        if (_size(region, "original_width", i), _size(region, "original_height", i)) != (w, h):
            raise BadRequest("all regions in context.result must carry the same original_width/original_height")
        kind, value = region.get("type"), region["value"]
        if kind == "keypointlabels":
            points.append(_point(region, value, w, h, i))
        elif kind == "rectanglelabels":
            boxes.append(_box(value, w, h, i))
        else:
            raise BadRequest(
                f"context.result[{i}] has type {kind!r}; smart prompts must be keypointlabels or rectanglelabels",
                'use KeyPointLabels or RectangleLabels with smart="true" as the prompt tools',
            )
        if isinstance(region.get("from_name"), str):
            controls.add(region["from_name"])
        label = label or _label(value, kind)
    if len(points) > max_points:
        raise BadRequest(f"{len(points)} points exceed the limit of {max_points}", _LIMIT_FIX)
    if len(boxes) > max_boxes:
        raise BadRequest(f"{len(boxes)} rectangles exceed the limit of {max_boxes}", _LIMIT_FIX)
    if points and len(boxes) > 1:
        raise BadRequest(
            "points can refine one rectangle at a time, got several", "accept or delete the other rectangles first"
        )

    if len(boxes) > 1:
        prompts = tuple(_prompt([], b) for b in boxes)
        previous = None
    else:
        box = boxes[0] if boxes else None
        prompts = (_prompt(points, box),)
        last_is_box = result[-1].get("type") == "rectanglelabels"
        previous = _prompt(points, None) if last_is_box else _prompt(points[:-1], box)
        if previous.n_points == 0 and previous.box is None:
            previous = None
    return PromptSet(
        prompts=prompts,
        to_name=to_name,
        prompt_controls=frozenset(controls),
        label=label,
        original_width=w,
        original_height=h,
        image_rotation=_rotation(first),
        previous=previous,
    )
