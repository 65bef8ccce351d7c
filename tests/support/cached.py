"""Reading what an embedding cache holds, through its public path, without computing anything."""

from __future__ import annotations

from backend.cache.embeddings import EmbeddingCache
from sam_model import ImageEmbedding


class _NotCached(Exception):
    pass


def cached(cache: EmbeddingCache, key: str) -> ImageEmbedding | None:
    """The embedding `cache` would serve for `key` (process, else Redis), or None if it would compute."""

    def refuse() -> ImageEmbedding:
        raise _NotCached

    try:
        return cache.get_or_compute(key, refuse)[0]
    except _NotCached:
        return None
