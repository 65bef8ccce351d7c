"""Build the segmentation engine from settings and serve it safely to many request threads.

Two engines share one interface (`model_id`, `encode`, `decode`): SAM (SAM_ENGINE=sam, any
family sam_model serves: SAM v1, SAM 2.x, MobileSAM, SAM-HQ) and OpenCV GrabCut
(SAM_ENGINE=grabcut, no weights). `engine_spec` checks the configuration
cheaply when the app is created, so a missing checkpoint fails the worker's boot with a
message naming the fix; the model itself is loaded once per process on first use (in the
gunicorn worker, after fork, never in a parent that may have initialised CUDA).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import torch

from backend.engines.batcher import EncodeBatcher
from backend.engines.grabcut import GrabCutEngine
from backend.errors import BackendError, Overloaded
from backend.settings import Settings
from sam_model import MODEL_TYPES, family_of, load_sam
from sam_model.common.checkpoint import DEVICES
from sam_model.common.decoding import PRECISIONS, DecodeResult
from sam_model.common.embedding import ImageEmbedding
from sam_model.common.quantize import QUANTIZE_MODES
from sam_model.families import OFFICIAL_TYPES
from sam_model.registry import OFFICIAL_CHECKPOINTS

log = logging.getLogger(__name__)
CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
RETRY_AFTER_S = 5  # what 503 Overloaded tells clients to wait
AUTO_GPU_BATCH = 8  # encoder batch on a GPU when ENCODE_BATCH_SIZE=0 (auto)


class Engine(Protocol):
    model_id: str

    def encode(self, image: np.ndarray) -> ImageEmbedding: ...

    def decode(self, embedding: ImageEmbedding, **prompts: Any) -> DecodeResult: ...

    def check_embedding(self, embedding: ImageEmbedding) -> None: ...  # ValueError unless encode could have made it


class EngineUnavailable(BackendError):
    """The configured engine cannot be built (missing checkpoint, bad model name)."""

    status, code = 503, "engine_unavailable"


@dataclass(frozen=True)
class EngineSpec:
    """What /health reports and how to build the engine, known before any weights load."""

    model_id: str
    info: dict[str, Any]
    factory: Callable[[], Engine] = field(repr=False)
    # The family's automatic-mask-generator defaults where they differ from SAM v1's.
    amg_defaults: Mapping[str, Any] = field(default_factory=dict)


def check_engine_choice(settings: Settings) -> None:
    """Validate the names in SAM_ENGINE / SAM_MODEL (and, for SAM, device and precision) before
    anything looks for a file, so a typo is reported as a typo, not as a missing checkpoint."""
    if settings.sam_engine not in ("sam", "grabcut"):
        raise EngineUnavailable(
            f"SAM_ENGINE={settings.sam_engine!r} is not an engine", "set SAM_ENGINE=sam or SAM_ENGINE=grabcut"
        )
    if settings.sam_engine == "grabcut":
        return
    if not 0 <= settings.encode_batch_size <= 64 or not 0 <= settings.encode_batch_window_ms <= 1000:
        raise EngineUnavailable(
            f"ENCODE_BATCH_SIZE={settings.encode_batch_size} / ENCODE_BATCH_WINDOW_MS={settings.encode_batch_window_ms} "
            "are out of range",
            "set ENCODE_BATCH_SIZE to 0 (auto), 1 (off) or up to 64, and ENCODE_BATCH_WINDOW_MS to 0-1000",
        )
    # Every type sam_model can build is accepted, "tiny" too (a random-weight test config that
    # lets the HTTP tests run the real SAM path); the fix names only the official ones.
    if settings.sam_model not in MODEL_TYPES:
        raise EngineUnavailable(
            f"SAM_MODEL={settings.sam_model!r} is not a SAM model",
            f"set SAM_MODEL to one of {', '.join(OFFICIAL_TYPES)}",
        )
    for name, value, allowed in (
        ("SAM_DEVICE", settings.sam_device, DEVICES),
        ("SAM_PRECISION", settings.sam_precision, ("auto", *PRECISIONS)),
        ("SAM_QUANTIZE", settings.sam_quantize, QUANTIZE_MODES),
    ):
        if value not in allowed:
            raise EngineUnavailable(
                f"{name}={value!r} is not one of {', '.join(allowed)}", f"set {name} to one of them"
            )


def engine_spec(settings: Settings) -> EngineSpec:
    """Validate SAM_ENGINE / SAM_MODEL / SAM_CHECKPOINT without loading anything heavy."""
    check_engine_choice(settings)
    if settings.sam_engine == "grabcut":
        return EngineSpec(
            model_id=GrabCutEngine.model_id,
            info={"engine": "grabcut", "note": "classical OpenCV GrabCut, not SAM; no weights needed"},
            factory=GrabCutEngine,
        )
    model_type = settings.sam_model
    checkpoint = Path(settings.sam_checkpoint) if settings.sam_checkpoint else _default_checkpoint(model_type)
    if not checkpoint.is_file():
        raise EngineUnavailable(
            f"SAM checkpoint not found at {checkpoint}",
            f"run `make checkpoint` (downloads {checkpoint.name}), or point SAM_CHECKPOINT at the file, "
            "or start with SAM_ENGINE=grabcut to label without weights",
        )
    # Same weights, same id in every process: the shared Redis cache relies on it.
    model_id = f"sam-{model_type}-{checkpoint.stem}-{checkpoint.stat().st_size}"
    if settings.sam_quantize != "none":
        model_id += f"-{settings.sam_quantize}"  # quantized encoders produce different embeddings

    family = family_of(model_type)

    def load() -> Engine:
        model = load_sam(model_type, str(checkpoint), device=settings.sam_device, quantize=settings.sam_quantize)
        device = next(model.parameters()).device.type
        precision = settings.sam_precision
        if precision == "auto":
            precision = "bf16" if device == "cuda" else "fp32"
        log.info("loaded %s %s from %s on %s (%s)", family.label, model_type, checkpoint, device, precision)
        return family.predictor(model, model_id, precision, settings.sam_compile)

    return EngineSpec(
        model_id=model_id,
        info={
            "engine": "sam",
            "family": family.label,
            "model": model_type,
            "checkpoint": checkpoint.name,
            "device": settings.sam_device,
            "precision": settings.sam_precision,
            "quantize": settings.sam_quantize,
        },
        factory=load,
        amg_defaults=family.amg_defaults,
    )


def _default_checkpoint(model_type: str) -> Path:
    official = OFFICIAL_CHECKPOINTS.get(model_type)
    if official is None:
        raise EngineUnavailable(
            f"SAM_MODEL={model_type} has no official checkpoint", "set SAM_CHECKPOINT to its .pth file"
        )
    return CHECKPOINT_DIR / official.filename


def spec_for(engine: Engine) -> EngineSpec:
    """Wrap an already-built engine (tests, embedding in another program)."""
    return EngineSpec(model_id=engine.model_id, info={"engine": type(engine).__name__}, factory=lambda: engine)


@dataclass(frozen=True)
class Batching:
    """ENCODE_BATCH_SIZE / ENCODE_BATCH_WINDOW_MS: 0 = auto (batches of 8 on a GPU, none on CPU)."""

    size: int = 0
    window_s: float = 0.005

    def batcher_for(self, engine: Engine) -> EncodeBatcher | None:
        encode_batch = getattr(engine, "encode_batch", None)
        device = getattr(engine, "device", None)
        size = self.size or (AUTO_GPU_BATCH if device is not None and device.type == "cuda" else 1)
        if encode_batch is None or size < 2:
            return None
        return EncodeBatcher(encode_batch, size, self.window_s)


class ServingEngine:
    """The engine as request threads see it: built once, lazily, and called one at a time.

    Encoder and decoder calls each hold their own lock: the two never touch the same
    sub-network, and a 20 s CPU encode for one annotator must not stall another annotator's
    100 ms click on a cached image. CUDA out-of-memory becomes 503 Overloaded (retry later)
    instead of a dead request thread.
    """

    def __init__(
        self,
        spec: EngineSpec,
        on_encode: Callable[[float], None] = lambda s: None,
        on_decode: Callable[[float], None] = lambda s: None,
        batching: Batching | None = None,
    ):
        self.spec = spec
        self.model_id = spec.model_id
        self._on_encode, self._on_decode = on_encode, on_decode
        self._batching = batching or Batching()
        self._batcher: EncodeBatcher | None = None
        self._engine: Engine | None = None
        self.load_error: str | None = None  # why the last load failed, for /health
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def load(self) -> Engine:
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    started = time.perf_counter()
                    try:
                        self._engine = self.spec.factory()
                    except Exception as exc:
                        self.load_error = f"loading engine {self.model_id} failed: {exc}"
                        raise EngineUnavailable(
                            self.load_error,
                            "check SAM_CHECKPOINT is a complete SAM state_dict for SAM_MODEL (re-run `make checkpoint`)",
                        ) from exc
                    self.load_error = None
                    self._batcher = self._batching.batcher_for(self._engine)
                    log.info("engine %s ready in %.1f s", self.model_id, time.perf_counter() - started)
        return self._engine

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """The image's embedding: batched with other requests' images when a batcher runs."""
        engine = self.load()
        started = time.perf_counter()
        if self._batcher is not None:
            with _oom_as_overloaded():
                embedding = self._batcher.encode(image)
        else:
            with self._encode_lock, _oom_as_overloaded():
                embedding = engine.encode(image)
        self._on_encode(time.perf_counter() - started)
        return embedding

    def check_embedding(self, embedding: ImageEmbedding) -> None:
        """ValueError unless the engine could have made `embedding` (a stored one may be stale or foreign)."""
        self.load().check_embedding(embedding)

    def decode(self, embedding: ImageEmbedding, **prompts: Any) -> DecodeResult:
        engine = self.load()
        with self._decode_lock, _oom_as_overloaded():
            started = time.perf_counter()
            result = engine.decode(embedding, **prompts)
        self._on_decode(time.perf_counter() - started)
        return result


class _oom_as_overloaded:
    """Context manager: torch.cuda.OutOfMemoryError -> Overloaded, after freeing cached blocks."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc_type is not None and issubclass(exc_type, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            raise Overloaded(
                "the GPU is out of memory", f"retry in {RETRY_AFTER_S} s, or use a smaller SAM_MODEL"
            ) from exc
        return False
