"""The content-addressed store of stage outputs (see :mod:`zitflow.cache.store`)."""

from .store import CacheStore, CorruptEntry

__all__ = ["CacheStore", "CorruptEntry"]
