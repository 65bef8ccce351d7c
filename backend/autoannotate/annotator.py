"""Automatic mask generation applied to one Label Studio task: options, naming, regions.

Shared by the RQ jobs, the CLI's local mode and /predict's optional auto-annotate path,
so the three produce the same regions and the same model_version for the same settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

import numpy as np

from backend.errors import BadRequest, Unprocessable
from backend.interactive.model import SamBackend
from backend.labelstudio.label_config import OUTPUT_TAG_TYPES, LabelConfig, OutputTarget, choose_output
from backend.outputs import mask_to_regions
from backend.validation import number

log = logging.getLogger(__name__)

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
    return kind(number(value, f"option {name!r}", low, high, whole=kind is int))


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


def options_from_setting(raw: str) -> AutoAnnotateOptions:
    """AUTO_ANNOTATE_OPTIONS (JSON, as POST /auto-annotate's "options"); bad values stop the start."""
    try:
        return parse_options(json.loads(raw) if raw.strip() else None)
    except (json.JSONDecodeError, BadRequest) as exc:
        raise ValueError(f"AUTO_ANNOTATE_OPTIONS={raw!r} is invalid: {getattr(exc, 'message', exc)}") from None


def output_for(config: LabelConfig, options: AutoAnnotateOptions) -> tuple[OutputTarget, str]:
    """The control that receives AMG regions, and the task.data key of its image.

    Without an `output` option this is the interactive path's choice (choose_output); with
    one, the first control of that type bound to an image of the config.
    """
    for image in config.images.values():
        if options.output is None:
            try:
                return choose_output(config, image.name, set(), options.label), image.value_key
            except Unprocessable:
                continue
        for control in config.bound_to(image.name):
            if OUTPUT_TAG_TYPES.get(control.tag) == options.output and control.labels:
                label = options.label if options.label in control.labels else control.labels[0]
                return OutputTarget(control.name, image.name, options.output, label), image.value_key
    wanted = f"<{options.output.capitalize()}Labels> control" if options.output else "BrushLabels, PolygonLabels or RectangleLabels control"
    raise Unprocessable(f"the project's label config has no {wanted} with labels bound to an <Image>",
                        "add one to the labeling config, or choose another 'output'")


def masks_to_prediction(masks: list[dict[str, Any]], target: OutputTarget, options: AutoAnnotateOptions,
                        width: int, height: int, region_options: dict[str, Any]) -> tuple[list[dict], float]:
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
                target.output_type,
                from_name=target.from_name,
                to_name=target.to_name,
                label=target.label,
                score=float(record["predicted_iou"]),
                original_width=width,
                original_height=height,
                **region_options,
            )
        )
    score = float(np.mean([m["predicted_iou"] for m in kept])) if kept else 0.0
    return regions, score


def run_spec(project: int, options: AutoAnnotateOptions, target: OutputTarget, value_key: str,
             model_id: str) -> dict[str, Any]:
    """Everything a worker needs to do any task of a run, as JSON."""
    return {"project": project, "options": options.to_json(), "target": asdict(target), "value_key": value_key,
            "model_version": options.model_version(model_id)}


class AutoAnnotator:
    """AMG for Label Studio tasks, through the interactive path's images, cache and engine.

    Reusing SamBackend means an auto-annotated image's embedding is the one the annotators'
    clicks will hit, and "embeddings" mode is exactly the interactive cache warm-up.
    """

    def __init__(self, backend: SamBackend):
        self.backend = backend

    def warm(self, task: dict, value_key: str) -> str:
        """Make sure the task image's embedding is cached; returns where it came from."""
        ref = self.backend.images.resolve(task, value_key)
        timings: dict[str, Any] = {}
        self.backend.embedding(ref, timings, source="auto-annotate")
        return timings["cache"]

    def annotate(self, task: dict, target: OutputTarget, value_key: str, options: AutoAnnotateOptions) -> dict:
        """One LS prediction ({"result", "score", "model_version"}) holding the task's AMG regions."""
        from sam_model.amg import AutomaticMaskGenerator

        engine = self.backend.engine.load()
        if not hasattr(engine, "sam"):
            raise Unprocessable(f"auto-annotate needs SAM; the engine is {engine.model_id}",
                                "run the backend and workers with SAM_ENGINE=sam and a checkpoint")
        ref = self.backend.images.resolve(task, value_key)
        image = self.backend.images.load(ref)
        embedding = self.backend.embedding(ref, {}, source="auto-annotate", image=image)
        generator = AutomaticMaskGenerator(engine, output_mode="binary_mask", mode=options.amg_mode, **options.amg)
        masks = generator.generate(image, embedding=embedding)
        height, width = image.shape[:2]
        regions, score = masks_to_prediction(masks, target, options, width, height, self.backend.region_options)
        return {"result": regions, "score": score, "model_version": options.model_version(engine.model_id)}


class PredictAutoAnnotator:
    """/predict without context (LS's "Retrieve predictions") answered with AMG regions.

    Up to `max_sync_tasks` tasks are labelled in the request, inside LS's 100 s timeout; a
    bigger batch is handed to RQ workers (its predictions are posted to LS when done) and
    answered at once with empty results. A task that fails gets an empty result; the others
    still get theirs.
    """

    def __init__(self, annotator: AutoAnnotator, options: AutoAnnotateOptions, max_sync_tasks: int,
                 start_run: Callable[[dict[str, Any], list[int]], str] | None):
        self.annotator = annotator
        self.options = options
        self.max_sync_tasks = max_sync_tasks
        self.start_run = start_run

    @property
    def model_version(self) -> str:
        return self.options.model_version(self.annotator.backend.engine.model_id)

    def __call__(self, tasks: list[dict], config: LabelConfig) -> list[dict]:
        target, value_key = output_for(config, self.options)
        model_id = self.annotator.backend.engine.model_id
        empty = {"result": [], "score": 0.0, "model_version": self.model_version}
        if len(tasks) > self.max_sync_tasks:
            self._hand_to_workers(tasks, target, value_key, model_id)
            return [dict(empty) for _ in tasks]
        predictions = []
        for task in tasks:
            try:
                predictions.append(self.annotator.annotate(task, target, value_key, self.options))
            except Exception as exc:  # noqa: BLE001 - one bad task must not fail the batch
                log.warning("task %s: auto-annotate failed: %s", task.get("id"), getattr(exc, "message", exc))
                predictions.append(dict(empty))
        return predictions

    def _hand_to_workers(self, tasks: list[dict], target: OutputTarget, value_key: str, model_id: str) -> None:
        ids = [t["id"] for t in tasks if isinstance(t.get("id"), int)]
        project = tasks[0].get("project")
        if self.start_run is None or not isinstance(project, int):
            log.warning("%d tasks exceed AUTO_ANNOTATE_MAX_SYNC_TASKS=%d and no RQ queue is configured: "
                        "they get empty predictions (set REDIS_URL and run `python -m backend worker`)",
                        len(tasks), self.max_sync_tasks)
            return
        run_id = self.start_run(run_spec(project, self.options, target, value_key, model_id), ids)
        log.info("%d tasks of project %s handed to workers as auto-annotate run %s", len(ids), project, run_id)
