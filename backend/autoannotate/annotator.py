"""Automatic mask generation applied to one Label Studio task: options, naming, regions.

Shared by the RQ jobs, the CLI's local mode and /predict's optional auto-annotate path,
so the three produce the same regions and the same model_version for the same settings.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from backend.concepts.labeller import Selection
from backend.concepts.labelling import check_label_thresholds, label_phrases, split_phrases
from backend.concepts.service import ConceptSpec
from backend.errors import BackendError, BadRequest, Unprocessable
from backend.interactive.model import SamBackend
from backend.labelstudio.label_config import OUTPUT_TAG_TYPES, LabelConfig, OutputTarget, choose_output
from backend.outputs import OUTPUT_TAGS, OUTPUT_TYPES, OutputType, mask_to_regions
from backend.validation import number
from sam_model.amg import AutomaticMaskGenerator
from sam_model.amg.generator import MODES as AMG_MODES
from sam_model.concepts import Thresholds

log = logging.getLogger(__name__)

LS_ID_MAX = 2**63 - 1  # LS keeps ids in 64-bit database columns

MODES = ("masks", "embeddings", "concepts")
MAX_MAPPED_LABELS = 1000  # entries of a per-label option ('prompts', 'thresholds')


@dataclass(frozen=True)
class Option:
    """What one user-settable option accepts. parse_options validates with it and the OpenAPI
    description is generated from it (backend.web.openapi), so the two cannot disagree."""

    kind: type  # int, float, bool, str, or dict (label -> `values`)
    low: float = 0  # int and float (and dict of float): the bounds, inclusive (validation.number)
    high: float = 0
    choices: tuple[str, ...] = ()  # str: the allowed values; empty: any string
    nullable: bool = False  # null means "decide from the label config" (or the engine)
    description: str = ""
    values: type = str  # dict: the type of its values, str or float

    def parse(self, name: str, value: Any) -> Any:
        """The value as the run uses it, or a 400 naming the option."""
        if value is None and self.nullable:
            return None
        if self.kind is dict:
            return self._parse_mapping(name, value)
        if self.kind is bool:
            if not isinstance(value, bool):
                raise BadRequest(f"option {name!r} must be true or false, got {value!r}", self.description)
            return value
        if self.kind is not str:
            return self.kind(number(value, f"option {name!r}", self.low, self.high, whole=self.kind is int))
        if self.choices and value not in self.choices:
            raise BadRequest(f"option {name!r}={value!r} is not one of {', '.join(self.choices)}")
        if not isinstance(value, str):
            raise BadRequest(f"option {name!r} must be a string, got {type(value).__name__}", self.description)
        return value

    def _parse_mapping(self, name: str, value: Any) -> dict[str, Any]:
        """A JSON object from label names to strings or numbers (whether the labels exist is
        checked against the label config when the run starts)."""
        if not isinstance(value, dict) or len(value) > MAX_MAPPED_LABELS:
            raise BadRequest(
                f"option {name!r} must be an object of at most {MAX_MAPPED_LABELS} labels", self.description
            )
        parsed = {}
        for label, item in value.items():
            if self.values is str:
                if not isinstance(item, str):
                    raise BadRequest(f"option {name!r}: the value of {label!r} must be a string", self.description)
                parsed[label] = item
            else:
                parsed[label] = number(item, f"option {name!r}: the value of {label!r}", self.low, self.high)
        return parsed


# The options of a run itself (AutoAnnotateOptions' fields but `amg`; their defaults are its defaults).
RUN_OPTIONS: dict[str, Option] = {
    "mode": Option(str, choices=MODES, description="masks: post predictions; embeddings: only warm the cache"),
    "output": Option(
        str, choices=OUTPUT_TYPES, nullable=True, description="the region type; null: the label config's (as a click's)"
    ),
    "label": Option(str, nullable=True, description="a label of the output control; null: its first"),
    "max_masks": Option(int, 1, 10_000, description="the largest masks kept per task"),
    "min_area": Option(int, 0, 10**9, description="masks smaller than this many pixels are dropped"),
    "amg_mode": Option(
        str, choices=AMG_MODES, description="fast: filters at low resolution first; exact: the reference's algorithm"
    ),
    "redo": Option(
        bool, description="false: tasks that already hold this run's prediction (same model and settings) are skipped"
    ),
}
# The options of the concepts mode (labels as text prompts; backend.concepts.labelling).
CONCEPT_OPTIONS: dict[str, Option] = {
    "prompts": Option(
        dict, description='concepts: phrases per label instead of its name, "." between phrases: {"Car": "car . truck"}'
    ),
    "score_threshold": Option(
        float, 0.0, 1.0, nullable=True, description="concepts: instances scoring lower are dropped; null: the engine's"
    ),
    "thresholds": Option(dict, 0.0, 1.0, values=float, description="concepts: a score threshold per label"),
    "overlap_iou": Option(
        float, 0.0, 1.0, description="concepts: of two instances whose boxes overlap more, the lower-scoring is dropped"
    ),
}
# AutomaticMaskGenerator's parameters users may set (defaults: the generator's, the reference's).
AMG_OPTIONS: dict[str, Option] = {
    "points_per_side": Option(int, 1, 128, description="the point grid is points_per_side squared"),
    "points_per_batch": Option(int, 1, 4096, description="points decoded at once: memory, not results"),
    "pred_iou_thresh": Option(float, 0.0, 1.0, description="masks with a lower predicted IoU are dropped"),
    "stability_score_thresh": Option(float, 0.0, 1.0, description="masks less stable than this are dropped"),
    "stability_score_offset": Option(float, 0.0, 100.0, description="logit offset of the stability score"),
    "box_nms_thresh": Option(float, 0.0, 1.0, description="box IoU above which the worse mask is dropped"),
    "crop_n_layers": Option(int, 0, 3, description="layers of image crops, each encoded again (slow)"),
    "crop_nms_thresh": Option(float, 0.0, 1.0, description="box NMS between crops"),
    "crop_overlap_ratio": Option(float, 0.0, 1.0, description="how much neighbouring crops overlap"),
    "crop_n_points_downscale_factor": Option(int, 1, 8, description="points per side shrink by this per layer"),
    "min_mask_region_area": Option(int, 0, 10**8, description="holes and islands under this many pixels removed"),
}
OPTIONS: dict[str, Option] = {**RUN_OPTIONS, **CONCEPT_OPTIONS, **AMG_OPTIONS}


@dataclass(frozen=True)
class AutoAnnotateOptions:
    """What one auto-annotate run does to each task (RUN_OPTIONS and CONCEPT_OPTIONS say what
    each field means).

    `amg` holds only the AMG_OPTIONS that were sent: the generator's defaults (the
    reference's) fill in the rest, and model_version names only what was chosen.
    """

    mode: str = "masks"
    output: OutputType | None = None
    label: str | None = None
    max_masks: int = 50
    min_area: int = 0
    amg_mode: str = "fast"
    redo: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    score_threshold: float | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    overlap_iou: float = 0.7
    amg: dict[str, Any] = field(default_factory=dict)

    def model_version(self, model_id: str) -> str:
        """Names the model and every setting that changes the regions, so reruns replace, not duplicate.

        `model_id` is what `ModelIds.for_mode` names for this mode; only the settings of the
        mode count (an AMG run's name does not change with concept options, nor the reverse)."""
        ignored = {"mode", "redo", *(("amg_mode", "amg") if self.mode == "concepts" else CONCEPT_OPTIONS)}
        settings = {k: v for k, v in asdict(self).items() if k not in ignored}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        kind = "concepts" if self.mode == "concepts" else f"amg-{self.amg_mode}"
        return f"{model_id}-{kind}-{digest}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def option_defaults() -> dict[str, Any]:
    """What each option is when not sent: AutoAnnotateOptions' defaults, and the generator's
    own for AMG parameters (read from its signature, so they are stated once)."""
    own = {
        f.name: f.default_factory() if f.default is MISSING else f.default
        for f in fields(AutoAnnotateOptions)
        if f.name in RUN_OPTIONS or f.name in CONCEPT_OPTIONS
    }
    generator = inspect.signature(AutomaticMaskGenerator).parameters
    return {**own, **{name: generator[name].default for name in AMG_OPTIONS}}


def parse_options(raw: Any) -> AutoAnnotateOptions:
    """Validate user-supplied options; unknown keys are refused so typos don't pass silently."""
    if raw is None:
        return AutoAnnotateOptions()
    if not isinstance(raw, dict):
        raise BadRequest("'options' must be a JSON object", 'send e.g. {"output": "polygon", "max_masks": 20}')
    unknown = set(raw) - set(OPTIONS)
    if unknown:
        raise BadRequest(f"unknown option(s): {', '.join(sorted(unknown))}", f"allowed: {', '.join(sorted(OPTIONS))}")
    parsed = {name: OPTIONS[name].parse(name, value) for name, value in raw.items()}
    for label, text in parsed.get("prompts", {}).items():  # the phrases now; the labels against the config later
        split_phrases(text, f"option 'prompts': the prompt of label {label!r}")
    amg = {name: parsed.pop(name) for name in AMG_OPTIONS if name in parsed}
    return AutoAnnotateOptions(**parsed, amg=amg)


def options_from_setting(raw: str) -> AutoAnnotateOptions:
    """AUTO_ANNOTATE_OPTIONS (JSON, as POST /auto-annotate's "options"); bad values stop the start."""
    try:
        return parse_options(json.loads(raw) if raw.strip() else None)
    except (json.JSONDecodeError, BadRequest) as exc:
        raise ValueError(f"AUTO_ANNOTATE_OPTIONS={raw!r} is invalid: {getattr(exc, 'message', exc)}") from None


@dataclass(frozen=True)
class ModelIds:
    """The models whose predictions a run posts, by mode: what its model_version names."""

    sam: str  # the served SAM model
    concepts: str | None = None  # what CONCEPT_ENGINE's predictions are named by, None when it is off

    @classmethod
    def of(cls, sam: str, concepts: ConceptSpec | None) -> ModelIds:
        return cls(sam, None if concepts is None else concepts.predictions_id(sam))

    def for_mode(self, mode: str) -> str:
        if mode != "concepts":
            return self.sam
        if self.concepts is None:
            raise Unprocessable(
                "the concepts mode needs a concept engine, and CONCEPT_ENGINE is none",
                "set CONCEPT_ENGINE=grounding-dino (or sam3) for the backend and its workers",
            )
        return self.concepts


def check_concepts(options: AutoAnnotateOptions, labels: tuple[str, ...]) -> None:
    """A concepts run's label options against the output control's labels: a 400 before any task runs."""
    if options.mode == "concepts":
        label_phrases(labels, options.prompts)
        check_label_thresholds(labels, options.thresholds)


def selection_for(options: AutoAnnotateOptions, labels: tuple[str, ...], engine_default: Thresholds) -> Selection:
    """Which instances of a concepts run become regions: per-label, run-wide, or the engine's threshold."""
    default = engine_default.score if options.score_threshold is None else options.score_threshold

    def threshold_of(label: str) -> float:
        return options.thresholds.get(label, default)

    return Selection(
        threshold_of,
        min(threshold_of(label) for label in labels),
        overlap_iou=options.overlap_iou,
        max_regions=options.max_masks,
        min_area=options.min_area,
    )


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
    *others, last = OUTPUT_TAGS.values()
    wanted = f"<{OUTPUT_TAGS[options.output]}> control" if options.output else f"{', '.join(others)} or {last} control"
    raise Unprocessable(
        f"the project's label config has no {wanted} with labels bound to an <Image>",
        "add one to the labeling config, or choose another 'output'",
    )


def masks_to_prediction(
    masks: list[dict[str, Any]],
    target: OutputTarget,
    options: AutoAnnotateOptions,
    width: int,
    height: int,
    region_options: dict[str, Any],
) -> tuple[list[dict], float]:
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


def is_ls_id(value: Any) -> bool:
    """A Label Studio object id: a positive integer that fits LS's 64-bit database column."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LS_ID_MAX


class RunSpecInvalid(BackendError):
    """A run's stored spec cannot be read (damaged, or written by another version): its tasks fail, not retry."""

    status, code = 500, "run_spec_invalid"


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to do any task of a run, checked once when the run starts.

    Stored with the run record in the job queue's Redis as JSON (never pickle) and read back
    by every job of the run, so `from_json` checks what it reads as strictly as a request.
    """

    project: int
    options: AutoAnnotateOptions
    target: OutputTarget
    value_key: str  # the task.data key of the image
    model_version: str  # what the starting backend's model names its predictions: for reading run records
    labels: tuple[str, ...]  # the output control's labels: the concepts mode's prompts

    @classmethod
    def create(
        cls,
        project: int,
        options: AutoAnnotateOptions,
        target: OutputTarget,
        value_key: str,
        models: ModelIds,
        labels: tuple[str, ...],
    ) -> RunSpec:
        check_concepts(options, labels)
        return cls(project, options, target, value_key, options.model_version(models.for_mode(options.mode)), labels)

    def to_json(self) -> str:
        return json.dumps(
            {
                "project": self.project,
                "options": self.options.to_json(),
                "target": asdict(self.target),
                "value_key": self.value_key,
                "model_version": self.model_version,
                "labels": list(self.labels),
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunSpec:
        """The spec `to_json` wrote; anything else raises RunSpecInvalid saying what is wrong."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise _invalid(f"not JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict) or set(data) != _SPEC_KEYS:
            raise _invalid(f"expected an object with keys {', '.join(sorted(_SPEC_KEYS))}")
        if not is_ls_id(data["project"]):
            raise _invalid("'project' is not a Label Studio id")
        options, target = data["options"], data["target"]
        if not isinstance(options, dict) or not isinstance(options.get("amg"), dict):
            raise _invalid("'options' is not an options object")
        try:
            parsed = parse_options({**{k: v for k, v in options.items() if k != "amg"}, **options["amg"]})
        except BadRequest as exc:
            raise _invalid(f"'options': {exc.message}") from None
        if (
            not isinstance(target, dict)
            or set(target) != _TARGET_KEYS
            or not all(isinstance(v, str) for v in target.values())
            or target["output_type"] not in OUTPUT_TYPES
        ):
            raise _invalid("'target' is not an output control")
        if not all(isinstance(data[k], str) and data[k] for k in ("value_key", "model_version")):
            raise _invalid("'value_key' and 'model_version' must be non-empty strings")
        labels = data["labels"]
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise _invalid("'labels' must be a list of strings")
        return cls(
            data["project"], parsed, OutputTarget(**target), data["value_key"], data["model_version"], tuple(labels)
        )


_SPEC_KEYS = {f.name for f in fields(RunSpec)}
_TARGET_KEYS = {f.name for f in fields(OutputTarget)}


def _invalid(detail: str) -> RunSpecInvalid:
    return RunSpecInvalid(
        f"the auto-annotate run's stored spec is invalid: {detail}",
        "start the run again; the backend and its workers must run the same version",
    )


class AutoAnnotator:
    """AMG for Label Studio tasks, through the interactive path's images, cache and engine.

    Reusing SamBackend means an auto-annotated image's embedding is the one the annotators'
    clicks will hit, and "embeddings" mode is exactly the interactive cache warm-up.
    """

    def __init__(self, backend: SamBackend):
        self.backend = backend

    @property
    def model_ids(self) -> ModelIds:
        labeller = self.backend.concepts
        if labeller is None:
            return ModelIds(self.backend.engine.model_id)
        return ModelIds.of(self.backend.engine.model_id, labeller.concepts.spec)

    def model_version(self, options: AutoAnnotateOptions) -> str:
        return options.model_version(self.model_ids.for_mode(options.mode))

    def warm(self, task: dict, value_key: str) -> str:
        """Make sure the task image's embedding is cached; returns where it came from."""
        ref = self.backend.images.resolve(task, value_key)
        _, spent = self.backend.embedding(ref, "auto-annotate")
        return spent.cache

    def annotate(
        self,
        task: dict,
        target: OutputTarget,
        value_key: str,
        options: AutoAnnotateOptions,
        labels: tuple[str, ...] = (),
    ) -> dict:
        """One LS prediction ({"result", "score", "model_version"}) holding the task's regions:
        AMG's, or in the concepts mode the instances of every label in `labels`."""
        if options.mode == "concepts":
            return self._annotate_concepts(task, target, value_key, options, labels)

        engine = self.backend.engine.load()
        if not hasattr(engine, "grid_decoder"):
            raise Unprocessable(
                f"auto-annotate needs SAM; the engine is {engine.model_id}",
                "run the backend and workers with SAM_ENGINE=sam and a checkpoint",
            )
        ref = self.backend.images.resolve(task, value_key)
        image = self.backend.images.load(ref)
        embedding, _ = self.backend.embedding(ref, "auto-annotate", image=image)
        amg = {**self.backend.engine.spec.amg_defaults, **options.amg}  # the family's defaults, then the user's
        generator = AutomaticMaskGenerator(engine, output_mode="binary_mask", mode=options.amg_mode, **amg)
        masks = generator.generate(image, embedding=embedding)
        height, width = image.shape[:2]
        regions, score = masks_to_prediction(masks, target, options, width, height, self.backend.region_options)
        return {"result": regions, "score": score, "model_version": self.model_version(options)}

    def _annotate_concepts(
        self, task: dict, target: OutputTarget, value_key: str, options: AutoAnnotateOptions, labels: tuple[str, ...]
    ) -> dict:
        labeller = self.backend.concepts
        version = self.model_version(options)  # a process without a concept engine says so here
        if labeller is None:
            raise Unprocessable("this process has no concept engine", "set the backend's CONCEPT_ENGINE here too")
        phrases = label_phrases(labels, options.prompts)
        selection = selection_for(options, labels, labeller.concepts.default_thresholds())
        ref = self.backend.images.resolve(task, value_key)
        regions, score = labeller.from_phrases(ref, phrases, target, selection)
        return {"result": regions, "score": score, "model_version": version}


class PredictAutoAnnotator:
    """/predict without context (LS's "Retrieve predictions") answered with AMG regions.

    Up to `max_sync_tasks` tasks are labelled in the request, inside LS's 100 s timeout; a
    bigger batch is handed to RQ workers (its predictions are posted to LS when done) and
    answered at once with empty results. A task that fails gets an empty result; the others
    still get theirs. Each task labelled here downloads its image on a request thread, so it
    holds one of the click path's cold slots (backend.interactive.cold_slots) meanwhile.
    """

    def __init__(
        self,
        annotator: AutoAnnotator,
        options: AutoAnnotateOptions,
        max_sync_tasks: int,
        start_run: Callable[[RunSpec, list[int]], str] | None,
    ):
        self.annotator = annotator
        self.options = options
        self.max_sync_tasks = max_sync_tasks
        self.start_run = start_run

    @property
    def model_version(self) -> str:
        return self.annotator.model_version(self.options)

    def __call__(self, tasks: list[dict], config: LabelConfig) -> list[dict]:
        target, value_key = output_for(config, self.options)
        labels = config.controls[target.from_name].labels
        check_concepts(self.options, labels)
        empty = {"result": [], "score": 0.0, "model_version": self.model_version}
        if len(tasks) > self.max_sync_tasks:
            self._hand_to_workers(tasks, target, value_key, labels)
            return [dict(empty) for _ in tasks]
        predictions = []
        for task in tasks:
            try:
                with self.annotator.backend.cold_slots.enter():
                    predictions.append(self.annotator.annotate(task, target, value_key, self.options, labels))
            except Exception as exc:  # noqa: BLE001 - one bad task must not fail the batch
                log.warning("task %s: auto-annotate failed: %s", task.get("id"), getattr(exc, "message", exc))
                predictions.append(dict(empty))
        return predictions

    def _hand_to_workers(
        self, tasks: list[dict], target: OutputTarget, value_key: str, labels: tuple[str, ...]
    ) -> None:
        ids = [t["id"] for t in tasks if isinstance(t.get("id"), int)]
        project = tasks[0].get("project")
        if self.start_run is None or not isinstance(project, int):
            log.warning(
                "%d tasks exceed AUTO_ANNOTATE_MAX_SYNC_TASKS=%d and no RQ queue is configured: "
                "they get empty predictions (set REDIS_URL and run `python -m backend worker`)",
                len(tasks),
                self.max_sync_tasks,
            )
            return
        spec = RunSpec.create(project, self.options, target, value_key, self.annotator.model_ids, labels)
        run_id = self.start_run(spec, ids)
        log.info("%d tasks of project %s handed to workers as auto-annotate run %s", len(ids), project, run_id)
