//! Shared LRU block cache.
