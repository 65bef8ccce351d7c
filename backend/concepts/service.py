"""The concept engine a backend serves (CONCEPT_ENGINE): loaded once on first use, its image
features cached like embeddings, its calls one at a time.

The engines are sam_model.concepts' (SAM 3, Grounding DINO through `transformers`, imported
only when one loads). Nothing is downloaded unless CONCEPT_DOWNLOAD says so; without it the
Hugging Face hub is switched off for the process (HF_HUB_OFFLINE), because the hub client
otherwise calls home once per process even for files it already has.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.cache.embeddings import EmbeddingCache, Source
from backend.engines.engine import EngineUnavailable
from backend.errors import BadRequest, Unprocessable
from backend.settings import Settings
from sam_model.common.checkpoint import resolve_device
from sam_model.concepts import ENGINE_KINDS, ConceptEngine, ConceptFeatures, Instance, Thresholds, load_concept_engine

log = logging.getLogger(__name__)

# The public weights each engine loads when CONCEPT_MODEL is empty.
DEFAULT_MODELS = {"grounding-dino": "IDEA-Research/grounding-dino-tiny", "sam3": "facebook/sam3"}
ENGINES = ("none", *ENGINE_KINDS)
# Engines whose boxes become masks through the served SAM model (the others segment themselves).
BOX_ENGINES = ("grounding-dino",)
# Engines that take an exemplar box ("find all similar").
EXEMPLAR_ENGINES = ("sam3",)


@dataclass(frozen=True)
class ConceptSpec:
    """Which concept engine to load, from where, and whether the hub may be asked."""

    kind: str
    source: str
    device: str = "auto"
    token: str | None = None
    allow_download: bool = False
    score_threshold: float | None = None  # interactive prompts' cut-off; None: the engine's
    precision: str = "auto"  # SAM_PRECISION: auto and bf16 run bf16 on a GPU; fp32 elsewhere

    def dtype(self, device: torch.device) -> torch.dtype:
        """bf16 on a GPU unless SAM_PRECISION=fp32 (SAM 3 in bf16: half the time and memory); fp32 on CPU."""
        return torch.bfloat16 if device.type == "cuda" and self.precision != "fp32" else torch.float32

    @property
    def model_id(self) -> str:
        """The engine's name for its features (what sam_model's engine calls itself)."""
        return f"{self.kind}:{self.source}"

    def predictions_id(self, sam_model_id: str) -> str:
        """What its predictions are named by: the engine, and the SAM model that masks a box engine's boxes."""
        return f"{self.model_id}+{sam_model_id}" if self.kind in BOX_ENGINES else self.model_id


def concept_spec(settings: Settings) -> ConceptSpec | None:
    """CONCEPT_ENGINE and its model, or None when it is `none`; a bad name stops the start."""
    kind = settings.concept_engine.strip().lower()
    if kind not in ENGINES:
        raise ValueError(f"CONCEPT_ENGINE={settings.concept_engine!r} is not one of {', '.join(ENGINES)}")
    if kind == "none":
        return None
    return ConceptSpec(
        kind,
        settings.concept_model.strip() or DEFAULT_MODELS[kind],
        settings.sam_device,
        settings.hf_token or None,
        settings.concept_download,
        _threshold(settings.concept_score_threshold),
        settings.sam_precision,
    )


def _threshold(raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"CONCEPT_SCORE_THRESHOLD={raw!r} must be a number in [0, 1] (or empty: the engine's)")
    return value


class ConceptService:
    """The loaded concept engine for request threads and workers (thread-safe)."""

    def __init__(
        self,
        spec: ConceptSpec,
        cache: EmbeddingCache[ConceptFeatures],
        loader: Callable[..., ConceptEngine] = load_concept_engine,
    ):
        self.spec = spec
        self.kind = spec.kind
        self.model_id = spec.model_id
        self.cache = cache
        self._cache_id = f"{spec.model_id}|{weights_fingerprint(spec.source)}"
        self.load_error: str | None = None
        self._loader = loader
        self._engine: ConceptEngine | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # one engine call at a time: it is the whole CPU (or GPU) already

    @property
    def exemplars(self) -> bool:
        return self.kind in EXEMPLAR_ENGINES

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def info(self) -> dict[str, Any]:
        """What /health says of it."""
        return {
            "engine": self.kind,
            "model": self.spec.source,
            "model_id": self.model_id,
            "loaded": self.loaded,
            "find_similar": self.exemplars,
            **({"error": self.load_error} if self.load_error else {}),
        }

    def load(self) -> ConceptEngine:
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    self._engine = self._load()
        return self._engine

    def features(self, image_key: str, image: Callable[[], np.ndarray]) -> tuple[ConceptFeatures, Source]:
        """The image's backbone output: cached per process and in Redis, computed once per image."""
        engine = self.load()

        def compute() -> ConceptFeatures:
            pixels = image()
            with self._run_lock:
                try:
                    return engine.features(pixels)
                except ValueError as exc:  # the engine's processor cannot take this image (e.g. 1x5000)
                    height, width = pixels.shape[:2]
                    raise Unprocessable(
                        f"the concept engine cannot read this {width}x{height} image: {exc}",
                        "pad or resize the image to a less extreme shape",
                    ) from exc

        return self.cache.get_or_compute(f"{self._cache_id}|{image_key}", compute)

    def find(self, features: ConceptFeatures, prompts: Sequence[str], thresholds: Thresholds) -> list[Instance]:
        """Every instance of every prompt above `thresholds`; the engine's ValueErrors become 400s."""
        engine = self.load()
        with self._run_lock, _value_errors_as_bad_requests():
            return engine.find(features, prompts, thresholds)

    def check_exemplars(self) -> None:
        """A 422 unless the engine takes exemplar boxes: known before any image is fetched."""
        if not self.exemplars:
            raise Unprocessable(
                f"CONCEPT_ENGINE={self.kind} cannot find objects similar to a box",
                "set CONCEPT_ENGINE=sam3 for exemplar prompts, or type the object's name instead",
            )

    def find_similar(self, features: ConceptFeatures, box: Sequence[float], thresholds: Thresholds) -> list[Instance]:
        self.check_exemplars()
        engine = self.load()
        with self._run_lock, _value_errors_as_bad_requests():
            return engine.find_similar(features, box, thresholds)

    def default_thresholds(self) -> Thresholds:
        """The engine's thresholds, with CONCEPT_SCORE_THRESHOLD's score when it is set."""
        engine = self.load().default_thresholds
        if self.spec.score_threshold is None:
            return engine
        return Thresholds(score=self.spec.score_threshold, mask=engine.mask)

    def _load(self) -> ConceptEngine:
        if not self.spec.allow_download:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        try:
            device = resolve_device(self.spec.device)
            engine = self._loader(
                self.spec.kind,
                self.spec.source,
                device=str(device),
                token=self.spec.token,
                allow_download=self.spec.allow_download,
                dtype=self.spec.dtype(device),
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure is "engine unavailable" with its cause
            self.load_error = f"loading concept engine {self.model_id} failed: {exc}"
            log.error("%s", self.load_error)
            raise EngineUnavailable(self.load_error, _load_fix(self.spec)) from exc
        self.load_error = None
        log.info("concept engine %s ready in %.1f s", self.model_id, time.perf_counter() - started)
        return engine


def weights_fingerprint(source: str) -> str:
    """Sizes and modification times of a local model folder's files (or file), hashed: features of
    weights since replaced at the same path are then a cache miss. Empty for a hub id."""
    path = Path(source)
    if not path.exists():
        return ""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamps = [
        (p.name if p == path else str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    ]
    return hashlib.sha256(json.dumps(stamps).encode()).hexdigest()[:12]


def features_check(model_id: str) -> Callable[[ConceptFeatures], None]:
    """For the features cache: ValueError for stored features another model made (a Redis value
    of another deployment or version is a miss, not an answer)."""

    def check(features: ConceptFeatures) -> None:
        if features.model_id != model_id:
            raise ValueError(f"features of {features.model_id!r}, not {model_id!r}")

    return check


def _load_fix(spec: ConceptSpec) -> str:
    fix = "point CONCEPT_MODEL at a local folder holding the model (config.json, weights, processor files)"
    if not spec.allow_download:
        fix += ", or set CONCEPT_DOWNLOAD=true to fetch it from the Hugging Face hub"
    if spec.kind == "sam3":
        fix += "; facebook/sam3 is gated: accept its licence on the hub and set HF_TOKEN"
    return fix


class _value_errors_as_bad_requests:
    """The engines raise ValueError for prompts they cannot take (too long, a '.' in a Grounding
    DINO phrase): the caller's input, so a 400 that says which."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc_type is not None and issubclass(exc_type, ValueError):
            raise BadRequest(
                f"the concept engine refused the request: {exc}",
                "change what the message names (a phrase's length, a '.' inside a Grounding DINO phrase, the box)",
            ) from exc
        return False
