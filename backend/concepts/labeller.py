"""Labelled regions for one image from phrases or an exemplar box.

The concept engine finds the instances (its image features cached like embeddings), the
served SAM model draws the masks of box-only engines (Grounding DINO: each box is a SAM box
prompt, through the same cached embedding the annotators' clicks use), and the outputs turn
them into Label Studio regions. Auto-annotate's concepts mode, the smart TextArea and "find
all similar" all go through here, so they label alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from backend.bulkhead import Bulkhead
from backend.concepts.labelling import LabelledInstance, LabelledPhrase, keep_instances
from backend.concepts.service import ConceptService
from backend.engines.engine import ServingEngine
from backend.errors import Overloaded
from backend.images.refs import ImageRef
from backend.labelstudio.label_config import OutputTarget
from backend.metrics import Metrics
from backend.outputs import box_region
from sam_model.common.embedding import ImageEmbedding
from sam_model.concepts import ConceptFeatures, Instance, Thresholds


class ServedSam(Protocol):
    """What labelling needs of the interactive backend (backend.interactive.model.SamBackend):
    its images, its SAM model and embedding cache, its region builder and its cold slots."""

    images: Any  # backend.interactive.model.ImageSource
    engine: ServingEngine
    metrics: Metrics
    region_options: dict
    to_regions: Callable[..., list[dict]]

    @property
    def cold_slots(self) -> Any: ...  # .enter() -> a context manager

    def embedding(
        self, ref: ImageRef, source: str, *, image: np.ndarray | None = None
    ) -> tuple[ImageEmbedding, Any]: ...


@dataclass(frozen=True)
class Selection:
    """Which found instances become regions (backend.concepts.labelling: the overlap rule)."""

    threshold_of: Callable[[str], float]  # a label's lowest score
    lowest: float  # the lowest of them all: what the engine is asked for
    overlap_iou: float = 0.7
    max_regions: int = 50
    min_area: int = 0

    @classmethod
    def uniform(cls, threshold: float) -> Selection:
        """One threshold for every label, the other rules at their defaults (interactive prompts)."""
        return cls(lambda _: threshold, threshold)

    def thresholds(self, engine_default: Thresholds) -> Thresholds:
        return Thresholds(score=self.lowest, mask=engine_default.mask)


class ConceptLabeller:
    """One per process, beside the SamBackend whose images, cache and model it shares.

    `slots` bounds the typed phrases and example boxes in progress on request threads: the
    engine answers one at a time, so a queue of them would hold threads for nothing, and
    they must never take all of the cold-click slots they also hold (clicks need some)."""

    def __init__(self, backend: ServedSam, concepts: ConceptService, slots: int = 1):
        self.backend = backend
        self.concepts = concepts
        self.slots = Bulkhead(
            slots,
            lambda: Overloaded(
                f"all {slots} slots for typed phrases and find-all-similar are busy in this process "
                "(the concept engine answers one at a time)",
                "retry in a few seconds; raise THREADS to allow more at once",
            ),
        )

    def from_phrases(
        self,
        ref: ImageRef,
        phrases: Sequence[LabelledPhrase],
        target: OutputTarget,
        selection: Selection,
        *,
        expected_size: tuple[int, int] | None = None,
        image_rotation: float = 0,
    ) -> tuple[list[dict], float]:
        """Regions (each with its phrase's label) and their mean score."""
        prompts = [p.phrase for p in phrases]
        return self._label(
            ref,
            lambda features, thresholds: self.concepts.find(features, prompts, thresholds),
            phrases,
            target,
            selection,
            expected_size,
            image_rotation,
        )

    def similar(
        self,
        ref: ImageRef,
        box_xyxy: Sequence[float],
        target: OutputTarget,
        selection: Selection,
        *,
        expected_size: tuple[int, int] | None = None,
        image_rotation: float = 0,
    ) -> tuple[list[dict], float]:
        """Every object like the one in `box_xyxy` (pixels), labelled with `target.label`."""
        return self._label(
            ref,
            lambda features, thresholds: self.concepts.find_similar(features, box_xyxy, thresholds),
            [LabelledPhrase("", target.label)],
            target,
            selection,
            expected_size,
            image_rotation,
        )

    def _label(
        self,
        ref: ImageRef,
        find: Callable[[ConceptFeatures, Thresholds], list[Instance]],
        phrases: Sequence[LabelledPhrase],
        target: OutputTarget,
        selection: Selection,
        expected_size: tuple[int, int] | None,
        image_rotation: float,
    ) -> tuple[list[dict], float]:
        """Features (cached) -> the engine's instances -> the selection rule -> regions."""
        image = _LazyImage(lambda: self.backend.images.load(ref, expected_size))
        features = self._features(ref, image)
        found = find(features, selection.thresholds(self.concepts.default_thresholds()))
        kept = keep_instances(found, phrases, selection.threshold_of, selection.overlap_iou, selection.max_regions)
        return self._regions(ref, image, features.original_size, kept, target, selection.min_area, image_rotation)

    def _features(self, ref: ImageRef, image: _LazyImage) -> ConceptFeatures:
        features, level = self.concepts.features(ref.cache_key, image.get)
        self.backend.metrics.cache.labels(level=level, source="concept-features").inc()
        return features

    def _regions(
        self,
        ref: ImageRef,
        image: _LazyImage,
        size: tuple[int, int],
        kept: list[LabelledInstance],
        target: OutputTarget,
        min_area: int,
        image_rotation: float,
    ) -> tuple[list[dict], float]:
        height, width = size
        common = dict(
            from_name=target.from_name,
            to_name=target.to_name,
            original_width=width,
            original_height=height,
            image_rotation=image_rotation,
        )
        embedding: ImageEmbedding | None = None
        regions: list[dict] = []
        scores: list[float] = []
        for item in kept:
            instance = item.instance
            if target.output_type == "rectangle" and instance.mask is None:  # a detector's box is the answer
                regions.append(box_region(instance.box_xyxy, label=item.label, score=instance.score, **common))
                scores.append(instance.score)
                continue
            mask = instance.mask
            if mask is None:
                if embedding is None:  # pixels only if the features were computed here; else the cache may have it
                    embedding, _ = self.backend.embedding(ref, "concepts", image=image.loaded)
                mask = self._box_mask(embedding, instance.box_xyxy)
            if np.count_nonzero(mask) < max(min_area, 1):
                continue
            made = self.backend.to_regions(
                mask,
                target.output_type,
                label=item.label,
                score=instance.score,
                **common,
                **self.backend.region_options,
            )
            if made:
                regions += made
                scores.append(instance.score)
        return regions, float(np.mean(scores)) if scores else 0.0

    def _box_mask(self, embedding: ImageEmbedding, box_xyxy: Sequence[float]) -> np.ndarray:
        result = self.backend.engine.decode(
            embedding, point_coords=None, point_labels=None, box=np.asarray(box_xyxy, np.float32), multimask=False
        )
        return result.masks[0]


class _LazyImage:
    """The image, fetched on first need only: cached features and embeddings need no pixels."""

    def __init__(self, load: Callable[[], np.ndarray]):
        self._load = load
        self.loaded: np.ndarray | None = None

    def get(self) -> np.ndarray:
        if self.loaded is None:
            self.loaded = self._load()
        return self.loaded
