"""Prometheus metrics for one backend process (GET /metrics).

Each app gets its own registry, so two apps in one test process never collide. With several
gunicorn workers each worker reports its own counters (scrape through a per-worker port or
run WORKERS=1 with THREADS>1, the recommended shape for one model per process anyway).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Clicks on cached images take ~0.1 s; cold ones tens of seconds on CPU.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # resident memory and CPU: what a loaded model costs
        self.requests = Counter(
            "sam_requests_total", "HTTP requests by route and outcome", ["route", "outcome"], registry=r
        )
        self.request_seconds = Histogram(
            "sam_request_seconds", "HTTP request latency", ["route", "outcome"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.cache = Counter(
            "sam_embedding_cache_total",
            "Embedding (and, source=concept-features, concept feature) lookups by level: local/redis are hits, "
            "computed is a miss",
            ["level", "source"],
            registry=r,
        )
        self.cache_rejected = Counter(
            "sam_cache_rejected_total",
            "Redis cache values refused as unusable (corrupt, wrong model, shape or dtype) and recomputed",
            ["kind"],
            registry=r,
        )
        self.refine = Counter(
            "sam_refine_logits_total", "Previous-click logits lookups for refinement", ["found"], registry=r
        )
        self.encoder_seconds = Histogram(
            "sam_encoder_seconds", "Image encoder time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.decoder_seconds = Histogram(
            "sam_decoder_seconds", "Mask decoder time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.fetch_seconds = Histogram(
            "sam_image_fetch_seconds", "Image download and decode time", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.warmup_dropped = Counter(
            "sam_warmup_dropped_total", "Warm-up requests dropped because the queue was full", registry=r
        )
        self.warmup_done = Counter("sam_warmup_done_total", "Warm-up items worked", ["ok"], registry=r)
        self.warmup_depth = Gauge("sam_warmup_queue_depth", "Warm-up items waiting", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
