"""The composition root: settings -> engine, caches, images, outputs -> the SamBackend.

Every process that serves the model builds it here: gunicorn workers (backend.web.app), RQ
workers (backend.autoannotate.worker) and the CLI. This is the one place besides the
entry points that reads Settings; the modules it wires take plain values. No Flask, no RQ.
"""

from __future__ import annotations

from backend.allocator import keep_freed_memory
from backend.cache import EmbeddingCache
from backend.cache.embeddings import FEATURES
from backend.cache.logits import LogitsStore
from backend.concepts.labeller import ConceptLabeller
from backend.concepts.service import ConceptService, concept_spec, features_check
from backend.engines.engine import Batching, Engine, ServingEngine, engine_spec, spec_for
from backend.errors import BadRequest
from backend.images.source import LabelStudioImages
from backend.interactive.cold_slots import cold_slots_for
from backend.interactive.model import Limits, SamBackend
from backend.labelstudio.client import LabelStudioClient
from backend.metrics import Metrics
from backend.outputs.regions import mask_to_regions
from backend.settings import Settings

LOGITS_LOCAL_BYTES = 64 * 2**20  # ~256 previous-click logits (256 KiB each) per process


def build_backend(settings: Settings, engine: Engine | None = None) -> tuple[SamBackend, LabelStudioImages]:
    """The model object with its collaborators, built from settings (no weights loaded yet)."""
    # Process-wide, and here because every process that serves the model (gunicorn worker,
    # RQ worker, CLI) builds it through this function.
    keep_freed_memory(settings.cpu_memory_keep_mb)
    metrics = Metrics()
    spec = spec_for(engine) if engine is not None else engine_spec(settings)
    serving = ServingEngine(
        spec,
        on_encode=metrics.encoder_seconds.observe,
        on_decode=metrics.decoder_seconds.observe,
        batching=Batching(settings.encode_batch_size, settings.encode_batch_window_ms / 1000),
    )
    cache = EmbeddingCache(
        settings.embedding_cache_mb * 2**20,
        settings.redis_url,
        ttl_s=settings.embedding_ttl_s,
        lock_timeout_s=settings.embedding_lock_timeout_s,
        check=serving.check_embedding,
        max_pixels=settings.max_image_pixels,
        on_reject=metrics.cache_rejected.labels(kind="embedding").inc,
    )
    logits = LogitsStore(
        LOGITS_LOCAL_BYTES,
        settings.redis_url,
        ttl_s=settings.logits_ttl_s,
        on_reject=metrics.cache_rejected.labels(kind="logits").inc,
    )
    images = LabelStudioImages(settings)
    limits = Limits(
        settings.max_prompt_points,
        settings.max_prompt_boxes,
        settings.max_tasks_per_request,
        cold_clicks=cold_slots_for(settings.threads),
    )
    backend = SamBackend(
        serving,
        cache,
        logits,
        images,
        mask_to_regions,
        metrics,
        limits,
        warm_queue_size=settings.warm_queue_size,
        warm_on_predict=settings.warm_on_predict,
        region_options={"tolerance_px": settings.polygon_tolerance_px, "min_area_px": settings.polygon_min_area_px},
        find_similar_control=settings.find_similar_control,
    )
    concepts = concept_spec(settings)
    if concepts is not None:
        features = EmbeddingCache(
            settings.concept_cache_mb * 2**20,
            settings.redis_url,
            ttl_s=settings.embedding_ttl_s,
            lock_timeout_s=settings.embedding_lock_timeout_s,
            codec=FEATURES,
            key_prefix="sam:cft:",
            check=features_check(concepts.model_id),
            max_pixels=settings.max_image_pixels,
            on_reject=metrics.cache_rejected.labels(kind="concept_features").inc,
        )
        # At most half the cold-click slots go to concept prompts (they hold one of those too).
        slots = max(1, limits.cold_clicks // 2)
        backend.concepts = ConceptLabeller(backend, ConceptService(concepts, features), slots)
    return backend, images


def label_studio_client(settings: Settings) -> LabelStudioClient:
    """The client auto-annotate uses to read tasks and post predictions (needs LABEL_STUDIO_URL and a key)."""
    if not settings.label_studio_url or not settings.label_studio_api_key:
        raise BadRequest(
            "auto-annotate needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY",
            "set both for the backend and its workers (Account & Settings -> Access Token in LS)",
        )
    return LabelStudioClient(
        settings.label_studio_url, api_key=settings.label_studio_api_key, timeout=settings.fetch_timeout_s
    )
