"""Caches in front of the encoder: `EmbeddingCache` (LRU -> Redis -> compute) and its building blocks."""

from backend.cache.embeddings import EmbeddingCache, Source
from backend.cache.lru import ByteLRU
from backend.cache.redis_link import RedisLink

__all__ = ["ByteLRU", "EmbeddingCache", "RedisLink", "Source"]
