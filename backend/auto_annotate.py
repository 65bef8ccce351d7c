"""Automatic mask generation applied to one Label Studio task: options, naming, regions.

Shared by the RQ jobs, the CLI's local mode and /predict's optional auto-annotate path,
so the three produce the same regions and the same model_version for the same settings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from backend.errors import BadRequest
from backend.outputs import mask_to_regions

OUTPUT_TYPES = ("brush", "polygon", "rectangle")
MODES = ("masks", "embeddings")
AMG_MODES = ("fast", "exact")

# AMG parameters users may set, with the (type, minimum, maximum) they must satisfy.
AMG_PARAMETER_BOUNDS: dict[str, tuple[type, float, float]] = {
    "points_per_side": (int, 1, 128),
    "points_per_batch": (int, 1, 4096),
    "pred_iou_thresh": (float, 0.0, 1.0),
    "stability_score_thresh": (float, 0.0, 1.0),
    "stability_score_offset": (float, 0.0, 100.0),
    "box_nms_thresh": (float, 0.0, 1.0),
    "crop_n_layers": (int, 0, 3),
    "crop_nms_thresh": (float, 0.0, 1.0),
    "crop_overlap_ratio": (float, 0.0, 1.0),
    "crop_n_points_downscale_factor": (int, 1, 8),
    "min_mask_region_area": (int, 0, 10**8),
}


@dataclass(frozen=True)
class AutoAnnotateOptions:
    """What one auto-annotate run does to each task; defaults are SAM's reference AMG settings."""

    mode: str = "masks"  # masks: post predictions | embeddings: only warm the cache
    output: str | None = None  # brush | polygon | rectangle; None: what the label config has
    label: str | None = None  # None: the output control's first label
    max_masks: int = 50
    min_area: int = 0  # pixels; smaller masks are dropped
    amg_mode: str = "fast"
    amg: dict[str, Any] = field(default_factory=dict)

    def model_version(self, model_id: str) -> str:
        """Names the model and every setting that changes the regions, so reruns replace, not duplicate."""
        settings = {k: v for k, v in asdict(self).items() if k != "mode"}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        return f"{model_id}-amg-{self.amg_mode}-{digest}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _check_number(name: str, value: Any, kind: type, low: float, high: float) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not float(value).is_integer()):
        raise BadRequest(f"option {name!r} must be a{'n integer' if kind is int else ' number'}, got {value!r}",
                         f"send a number between {low} and {high}")
    if not (low <= value <= high):
        raise BadRequest(f"option {name!r}={value} is outside [{low}, {high}]", f"send a value between {low} and {high}")
    return kind(value)


def parse_options(raw: Any) -> AutoAnnotateOptions:
    """Validate user-supplied options; unknown keys are refused so typos don't pass silently."""
    if raw is None:
        return AutoAnnotateOptions()
    if not isinstance(raw, dict):
        raise BadRequest("'options' must be a JSON object", 'send e.g. {"output": "polygon", "max_masks": 20}')
    own = {f.name for f in fields(AutoAnnotateOptions)} - {"amg"}
    unknown = set(raw) - own - set(AMG_PARAMETER_BOUNDS)
    if unknown:
        raise BadRequest(f"unknown option(s): {', '.join(sorted(unknown))}",
                         f"allowed: {', '.join(sorted(own | set(AMG_PARAMETER_BOUNDS)))}")
    choices = {"mode": MODES, "output": OUTPUT_TYPES, "amg_mode": AMG_MODES}
    for name, allowed in choices.items():
        if name in raw and raw[name] is not None and raw[name] not in allowed:
            raise BadRequest(f"option {name!r}={raw[name]!r} is not one of {', '.join(allowed)}")
    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        raise BadRequest("option 'label' must be a string naming a label of the output control")
    amg = {name: _check_number(name, raw[name], *AMG_PARAMETER_BOUNDS[name]) for name in AMG_PARAMETER_BOUNDS if name in raw}
    return AutoAnnotateOptions(
        mode=raw.get("mode", "masks"),
        output=raw.get("output"),
        label=label,
        max_masks=int(_check_number("max_masks", raw.get("max_masks", 50), int, 1, 10_000)),
        min_area=int(_check_number("min_area", raw.get("min_area", 0), int, 0, 10**9)),
        amg_mode=raw.get("amg_mode", "fast"),
        amg=amg,
    )


@dataclass(frozen=True)
class OutputBinding:
    """Where regions go: the output control, its image, its type and the label to use."""

    from_name: str
    to_name: str
    image_key: str  # task.data key of the Image's value ("$image" -> "image")
    output_type: str
    label: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, str]) -> "OutputBinding":
        return cls(**raw)


def masks_to_prediction(masks: list[dict[str, Any]], binding: OutputBinding, options: AutoAnnotateOptions,
                        width: int, height: int) -> tuple[list[dict], float]:
    """AMG records -> LS regions: masks under min_area dropped, largest first, at most max_masks.

    Returns the regions and the prediction's score (mean predicted IoU of the masks kept).
    """
    kept = sorted((m for m in masks if m["area"] >= options.min_area), key=lambda m: m["area"], reverse=True)
    kept = kept[: options.max_masks]
    regions: list[dict] = []
    for record in kept:
        regions.extend(
            mask_to_regions(
                np.asarray(record["segmentation"], dtype=bool),
                binding.output_type,
                from_name=binding.from_name,
                to_name=binding.to_name,
                label=binding.label,
                score=float(record["predicted_iou"]),
                original_width=width,
                original_height=height,
            )
        )
    score = float(np.mean([m["predicted_iou"] for m in kept])) if kept else 0.0
    return regions, score
