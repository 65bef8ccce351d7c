"""Every environment variable the backend reads, read here and nowhere else.

Modules take plain arguments; only the wiring (app, worker, CLI) passes `Settings` values
to them, so each module stays testable without touching the environment. Every field here
has a row in the README's configuration table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    # Engine
    sam_engine: str = "sam"  # sam | grabcut (weights-free classical segmentation)
    sam_model: str = "sam2.1_hiera_tiny"  # any of sam_model.MODEL_TYPES (README: model table)
    sam_checkpoint: str = ""  # default: checkpoints/<official file of sam_model>
    sam_device: str = "auto"  # auto | cpu | cuda | mps
    sam_precision: str = "auto"  # auto (bf16 on cuda, fp32 elsewhere) | fp32 | bf16 | fp16
    sam_compile: bool = False
    sam_quantize: str = "none"  # none | int8 (CPU encoder only)
    encode_batch_size: int = 0  # new images encoded together: 0 = auto (8 on a GPU, off on CPU), 1 = off
    encode_batch_window_ms: float = 5.0  # how long a new image waits for batch-mates
    # Concept engine: label names and typed phrases as prompts (README: labelled pre-annotation)
    concept_engine: str = "none"  # none | grounding-dino | sam3
    concept_model: str = ""  # local folder or Hugging Face id; default: the engine's public model
    concept_download: bool = False  # fetch CONCEPT_MODEL from the Hugging Face hub when not cached
    hf_token: str = ""  # Hugging Face token for gated weights (facebook/sam3), used only to download
    concept_cache_mb: int = 256  # image features kept in this process (Redis holds them too)
    concept_score_threshold: str = ""  # default instance cut-off (runs may set theirs); empty: the engine's
    find_similar_control: str = "similar"  # the smart RectangleLabels whose box means "find all like this"
    # Label Studio
    label_studio_url: str = ""
    label_studio_api_key: str = ""
    local_files_document_root: str = ""
    # Image limits and fetching
    max_image_pixels: int = 100_000_000
    max_image_bytes: int = 100 * 1024 * 1024
    fetch_timeout_s: float = 30.0
    download_deadline_s: float = 60.0  # whole download (all redirects, every byte), not one read
    allow_private_image_urls: bool = False
    # Request limits
    max_request_bytes: int = 10 * 1024 * 1024
    max_prompt_points: int = 64
    max_prompt_boxes: int = 16
    max_tasks_per_request: int = 1000
    # Embedding cache
    redis_url: str = ""  # embedding cache (wants allkeys-lru)
    embedding_cache_mb: int = 512
    embedding_ttl_s: int = 7 * 24 * 3600
    embedding_lock_timeout_s: float = 120.0
    logits_ttl_s: int = 600
    warm_queue_size: int = 64
    warm_on_predict: bool = True
    # Outputs
    polygon_tolerance_px: float = 1.0
    polygon_min_area_px: int = 16
    # Server
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    log_level: str = "INFO"
    port: int = 9090
    workers: int = 1
    threads: int = 16  # waiting threads are cheap: the encoder and decoder are serialised anyway
    cpu_memory_keep_mb: int = 256  # freed memory kept for reuse (glibc); 0 = allocator defaults
    # Auto-annotate
    auto_annotate_on_predict: bool = False
    auto_annotate_max_sync_tasks: int = 4
    auto_annotate_options: str = ""  # JSON options for AUTO_ANNOTATE_ON_PREDICT, as POST /auto-annotate takes
    queue_redis_url: str = ""  # jobs, runs, what /setup said; must not evict. Empty: REDIS_URL
    rq_queue: str = "sam-auto-annotate"
    job_retries: int = 3
    job_timeout_s: int = 1800

    @property
    def job_redis_url(self) -> str:
        """Where jobs, runs and shared state live: QUEUE_REDIS_URL, else the cache's REDIS_URL."""
        return self.queue_redis_url or self.redis_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from its upper-case environment variable; bad values fail loudly."""
        env = os.environ if environ is None else environ
        values = {}
        for field in fields(cls):
            raw = env.get(field.name.upper())
            if raw is None:
                continue
            kind = type(field.default)
            try:
                values[field.name] = _bool(raw) if kind is bool else kind(raw)
            except ValueError as exc:
                raise ValueError(f"environment variable {field.name.upper()}={raw!r} is invalid: {exc}") from None
        return cls(**values)
