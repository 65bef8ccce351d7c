"""The Label Studio ML backend model: `predict(tasks, context, label_config=)` and `fit(event, data)`.

The protocol is label-studio-ml's, without its `**kwargs`: the one caller (backend.web) names
what it passes, and `predict` returns the results with the click's timings. Two paths:
- interactive (`context.result` holds the annotator's smart regions): prompt -> cached image
  embedding -> decoder -> brush/polygon/rectangle regions, for `tasks[0]` only (LS sends one);
- no context (a task was opened, or "Retrieve predictions"): queue warm-up of the embeddings
  and answer at once with no prediction per task (`[]`: LS stores none); with
  AUTO_ANNOTATE_ON_PREDICT the wiring sets `batch_annotator`, which answers with automatic
  masks instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from backend.cache.embeddings import Source
from backend.cache.logits import prompt_signature
from backend.concepts.interactive import answer_similar, answer_typed_text, similar_boxes, text_region
from backend.concepts.labeller import ConceptLabeller
from backend.engines.engine import ServingEngine
from backend.errors import BackendError, BadRequest, Unprocessable
from backend.images.decode import size_mismatch
from backend.images.refs import ImageRef
from backend.interactive.cold_slots import cold_slots
from backend.interactive.prompts import Prompt, PromptSet, parse_context
from backend.interactive.warmup import WarmupQueue
from backend.labelstudio.label_config import LabelConfig, OutputTarget, choose_output, parse_label_config
from backend.metrics import Metrics
from backend.outputs import OutputType
from sam_model.common.embedding import ImageEmbedding

log = logging.getLogger(__name__)

# A task's entry in a batch answer is one prediction (a dict) or a list of them. Label Studio
# 1.23 (ml/models.py `_get_predictions_from_ml_backend`) stores every dict with a "result",
# even an empty one (annotators then see a "0.00%" prediction tab, and each model version adds
# another); an empty list stores nothing and logs nothing. `{"results": []}` and a dict without
# "result" store nothing too, but LS logs each as an error. So a warm-up answers `[]`.


class ImageSource(Protocol):
    """Where task images come from (backend.images + backend.labelstudio.client behind it)."""

    def resolve(self, task: dict, value_key: str) -> ImageRef: ...

    def load(self, ref: ImageRef, expected_size: tuple[int, int] | None = None) -> np.ndarray:
        """HxWx3 uint8 RGB; with `expected_size` (width, height as LS shows the image) a file of
        another size is refused from its header, before its pixels cost memory."""
        ...


class EmbeddingStore(Protocol):
    def get_or_compute(self, key: str, compute: Callable[[], ImageEmbedding]) -> tuple[ImageEmbedding, Source]: ...

    def get_local(self, key: str) -> ImageEmbedding | None: ...

    def contains(self, key: str) -> bool: ...

    def local_usage(self) -> tuple[int, int]: ...


class LogitsCache(Protocol):
    def put(self, image_key: str, prompt_signature: str, logits: np.ndarray) -> None: ...

    def get(self, image_key: str, prompt_signature: str) -> np.ndarray | None: ...


class BatchAnnotator(Protocol):
    """Answers a batch /predict without context (auto-annotate.PredictAutoAnnotator)."""

    model_version: str

    def __call__(self, tasks: list[dict], config: LabelConfig) -> list[dict]: ...


class RegionBuilder(Protocol):
    """One mask -> LS result dicts: backend.outputs.mask_to_regions."""

    def __call__(
        self,
        mask: np.ndarray,
        output_type: OutputType,
        *,
        from_name: str,
        to_name: str,
        label: str,
        score: float,
        original_width: int,
        original_height: int,
        image_rotation: float = 0,
        tolerance_px: float = 1.0,
        min_area_px: float = 16,
    ) -> list[dict]: ...


@dataclass(frozen=True)
class Limits:
    max_prompt_points: int = 64
    max_prompt_boxes: int = 16
    max_tasks_per_request: int = 1000
    cold_clicks: int = (
        6  # request threads that may work on uncached images at once; the wiring sets cold_slots_for(THREADS)
    )


@dataclass(frozen=True)
class EmbeddingTimings:
    """Where an embedding came from; seconds spent fetching and encoding when this caller computed it."""

    cache: Source
    fetch: float | None = None
    encode: float | None = None


@dataclass(frozen=True)
class ClickTimings:
    """One click's time, for its request log line (/metrics observes the same figures where they arise)."""

    embedding: EmbeddingTimings
    decode: float
    output: float

    def log_fields(self) -> dict[str, float | str]:
        """`fetch encode cache decode output`, the first two only when this click computed the embedding."""
        measured = {"fetch": self.embedding.fetch, "encode": self.embedding.encode}
        return {
            **{k: v for k, v in measured.items() if v is not None},
            "cache": self.embedding.cache,
            "decode": self.decode,
            "output": self.output,
        }


@dataclass(frozen=True)
class Answer:
    """What /predict answers (one entry per task) and, for a click, where its time went."""

    results: Sequence[dict | list]
    timings: ClickTimings | None = None


class SamBackend:
    """One per process; thread-safe (state lives in the engine, caches and warm-up queue)."""

    def __init__(
        self,
        engine: ServingEngine,
        cache: EmbeddingStore,
        logits: LogitsCache,
        images: ImageSource,
        to_regions: RegionBuilder,
        metrics: Metrics,
        limits: Limits = Limits(),
        warm_queue_size: int = 64,
        warm_on_predict: bool = True,
        region_options: dict | None = None,
        find_similar_control: str = "similar",
    ):
        self.engine = engine
        self.cache = cache
        self.logits = logits
        self.images = images
        self.to_regions = to_regions
        self.metrics = metrics
        self.limits = limits
        self.warm_on_predict = warm_on_predict
        self.region_options = region_options or {}
        self.find_similar_control = find_similar_control
        self.cold_slots = cold_slots(limits.cold_clicks)
        # Set by the wiring when AUTO_ANNOTATE_ON_PREDICT is on: (tasks, config) -> predictions.
        self.batch_annotator: BatchAnnotator | None = None
        # Set by the wiring when CONCEPT_ENGINE is on: typed phrases, exemplar boxes, concepts runs.
        self.concepts: ConceptLabeller | None = None
        self.warmup: WarmupQueue[ImageRef] = WarmupQueue(
            self._warm,
            warm_queue_size,
            on_drop=metrics.warmup_dropped.inc,
            on_done=lambda ok: metrics.warmup_done.labels(ok=str(ok).lower()).inc(),
        )
        metrics.warmup_depth.set_function(self.warmup.depth)

    @property
    def model_version(self) -> str:
        """What /setup reports: LS skips tasks already predicted by this version, so when batch
        predictions are automatic masks it must be the version those predictions carry."""
        if self.batch_annotator is not None:
            return self.batch_annotator.model_version
        return self.engine.model_id

    # ---- protocol ---------------------------------------------------------------------------

    def predict(self, tasks: list[dict], context: dict | None = None, *, label_config: str | None = None) -> Answer:
        """One entry per task: a prediction, or `[]` for none (a warm-up). The arguments come from
        the request body as they are: checked here."""
        if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
            raise BadRequest("tasks must be a non-empty list of task objects")
        if len(tasks) > self.limits.max_tasks_per_request:
            raise BadRequest(
                f"{len(tasks)} tasks exceed MAX_TASKS_PER_REQUEST={self.limits.max_tasks_per_request}",
                "send fewer tasks per request",
            )
        config = parse_label_config(label_config)
        if context:
            if not isinstance(tasks[0].get("data"), dict):
                raise BadRequest("tasks[0].data must be an object holding the image URL")
            if text_region(context) is not None or similar_boxes(context, self.find_similar_control):
                return Answer([self._concept_prompt(tasks[0], context, config)])
            prediction, timings = self.predict_interactive(tasks[0], context, config)
            return Answer([prediction], timings)
        if self.batch_annotator is not None:
            return Answer(self.batch_annotator(tasks, config))
        return Answer([self._guarded(task, config) for task in tasks])

    def _concept_prompt(self, task: dict, context: dict, config: LabelConfig) -> dict:
        """A typed phrase (smart TextArea) or an example box (the find-all-similar tool)."""
        if self.concepts is None:
            raise Unprocessable(
                "typed phrases and find-all-similar need a concept engine, and CONCEPT_ENGINE is none",
                "set CONCEPT_ENGINE=grounding-dino (any machine; phrases only) or sam3 (a GPU) for the backend",
            )
        if text_region(context) is not None:
            return answer_typed_text(self.concepts, task, context, config)
        return answer_similar(
            self.concepts, task, context, config, self.find_similar_control, self.limits.max_prompt_boxes
        )

    def fit(self, event: str, data: dict) -> dict:
        """SAM is prompted, not trained: acknowledge LS's events so its UI stays happy."""
        return {"status": "ok", "message": f"{event or 'event'} received; SAM is not trained from annotations"}

    # ---- no-prompt path without auto-annotation: warm-up now, regions later -----------------

    def predict_without_prompt(self, task: dict, config: LabelConfig) -> list:
        """Warm the task's image embeddings so the first click is fast; no prediction for LS to store."""
        data = task.get("data")
        if self.warm_on_predict and isinstance(data, dict):
            for image in config.images.values():
                if image.value_key in data:
                    self.enqueue_warmup(task, image.value_key)
        return []

    def enqueue_warmup(self, task: dict, value_key: str) -> bool:
        ref = self.images.resolve(task, value_key)
        key = self._cache_key(ref)
        if self.cache.contains(key):
            return False
        return self.warmup.submit(key, ref)

    def _guarded(self, task: dict, config: LabelConfig) -> list:
        """A bad task in a batch gets no prediction; the others still get their warm-up."""
        try:
            return self.predict_without_prompt(task, config)
        except BackendError as exc:
            log.warning("task %s: %s", task.get("id"), exc.message)
        except Exception:  # best-effort side work must not fail the batch
            log.exception("task %s: warm-up could not be queued", task.get("id"))
        return []

    def _warm(self, ref: ImageRef) -> None:
        self.embedding(ref, "warmup")  # the warm-up thread is no request thread: no cold slot

    # ---- interactive path ---------------------------------------------------------------------

    def predict_interactive(self, task: dict, context: dict, config: LabelConfig) -> tuple[dict, ClickTimings]:
        prompts = parse_context(context, self.limits.max_prompt_points, self.limits.max_prompt_boxes)
        target = choose_output(config, prompts.to_name, set(prompts.prompt_controls), prompts.label)
        ref = self.images.resolve(task, config.image(prompts.to_name).value_key)
        embedding, spent = self._click_embedding(ref, (prompts.original_width, prompts.original_height))
        _check_size(embedding, prompts)

        started = time.perf_counter()
        masks, scores = self._decode(embedding, prompts, self._cache_key(ref))
        decoded = time.perf_counter()
        regions = [
            region
            for mask, score in zip(masks, scores, strict=True)
            for region in self._regions(mask, score, target, prompts)
        ]
        timings = ClickTimings(spent, decode=decoded - started, output=time.perf_counter() - decoded)
        return self._prediction(regions, float(np.mean(scores)) if len(scores) else 0.0), timings

    def _click_embedding(
        self, ref: ImageRef, expected_size: tuple[int, int]
    ) -> tuple[ImageEmbedding, EmbeddingTimings]:
        """A click on an image this process holds never waits; any other (Redis, a peer's encode,
        the download, the decode, the encode) needs one of the request threads' cold slots."""
        hit = self.cache.get_local(self._cache_key(ref))
        if hit is not None:
            self.metrics.cache.labels(level="local", source="click").inc()
            return hit, EmbeddingTimings("local")
        with self.cold_slots.enter():
            return self.embedding(ref, "click", expected_size=expected_size)

    def embedding(
        self,
        ref: ImageRef,
        source: str,
        *,
        image: np.ndarray | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> tuple[ImageEmbedding, EmbeddingTimings]:
        """The image's embedding; the image is fetched (unless the caller already has it) and
        encoded only when no cache has it. Takes no cold slot: request threads hold one around it."""
        computed = EmbeddingTimings("computed")  # stays without figures when another caller computed it

        def compute() -> ImageEmbedding:
            nonlocal computed
            embedding, computed = self._encode(ref, image, expected_size)
            return embedding

        embedding, level = self.cache.get_or_compute(self._cache_key(ref), compute)
        self.metrics.cache.labels(level=level, source=source).inc()
        return embedding, EmbeddingTimings(level, computed.fetch, computed.encode)

    def _encode(
        self, ref: ImageRef, image: np.ndarray | None, expected_size: tuple[int, int] | None
    ) -> tuple[ImageEmbedding, EmbeddingTimings]:
        fetch = None
        if image is None:
            started = time.perf_counter()
            image = self.images.load(ref, expected_size)
            fetch = time.perf_counter() - started
            self.metrics.fetch_seconds.observe(fetch)
        started = time.perf_counter()
        embedding = self.engine.encode(image)
        return embedding, EmbeddingTimings("computed", fetch, time.perf_counter() - started)

    def _decode(
        self, embedding: ImageEmbedding, prompts: PromptSet, image_key: str
    ) -> tuple[list[np.ndarray], list[float]]:
        """Decoding policy: a lone click asks for SAM's three candidates and keeps the best
        (one point is ambiguous: part, object or group); anything more specific asks for one
        mask. A click added to an earlier prompt is refined from that prompt's low-res logits."""
        if len(prompts.prompts) > 1:  # several boxes: one independent mask each
            results = [self.engine.decode(embedding, **_decoder_args(p), multimask=False) for p in prompts.prompts]
            return [r.masks[0] for r in results], [float(r.scores[0]) for r in results]
        prompt = prompts.prompts[0]
        mask_input = None
        if prompts.previous is not None:
            mask_input = self.logits.get(image_key, _signature(prompts.previous))
            self.metrics.refine.labels(found=str(mask_input is not None).lower()).inc()
        single = prompts.single_point and mask_input is None
        result = self.engine.decode(
            embedding, **_decoder_args(prompt), mask_input=mask_input, multimask=single, best_only=single
        )
        self.logits.put(image_key, _signature(prompt), result.low_res_logits[:1])
        return [result.masks[0]], [float(result.scores[0])]

    def _regions(self, mask: np.ndarray, score: float, target: OutputTarget, prompts: PromptSet) -> list[dict]:
        return self.to_regions(
            mask,
            target.output_type,
            from_name=target.from_name,
            to_name=target.to_name,
            label=target.label,
            score=score,
            original_width=prompts.original_width,
            original_height=prompts.original_height,
            image_rotation=prompts.image_rotation,
            **self.region_options,
        )

    def _cache_key(self, ref: ImageRef) -> str:
        return f"{self.engine.model_id}|{ref.cache_key}"

    def _prediction(self, regions: list[dict], score: float) -> dict:
        """A click's answer carries the interactive model's version, whatever /setup reports."""
        return {"result": regions, "score": score, "model_version": self.engine.model_id}


def _decoder_args(prompt: Prompt) -> dict[str, Any]:
    return {"point_coords": prompt.point_coords, "point_labels": prompt.point_labels, "box": prompt.box}


def _signature(prompt: Prompt) -> str:
    return prompt_signature(prompt.point_coords, prompt.point_labels, prompt.box)


def _check_size(embedding: ImageEmbedding, prompts: PromptSet) -> None:
    """LS's percent coordinates and the brush RLE only line up if we see the image LS shows."""
    h, w = embedding.original_size
    if (w, h) != (prompts.original_width, prompts.original_height):  # a cached embedding: no header to check
        raise size_mismatch((prompts.original_width, prompts.original_height), (w, h))
