//! Shared LRU cache of fixed-size blocks of object data, bounded in bytes.
//!
//! The read path splits every object into blocks of `block_size` bytes
//! (block `i` holds bytes `i * block_size .. (i + 1) * block_size`, the last
//! block of an object may be shorter). Fetched blocks land here, so re-reads
//! and several handles reading the same object are served from memory. One
//! cache is shared by every handle of the mount (`Send + Sync`, internally
//! locked).
//!
//! Layout: one ordered map `BlockKey -> (bytes, tick)` plus a recency index
//! `tick -> BlockKey`. The smallest tick is the least recently used entry.
//! Every operation is O(log n); `invalidate_object` is O(k log n) for the k
//! blocks of that object, found as one contiguous range of the ordered map.
//!
//! Subtle cases:
//!
//! 1. **The ETag is part of the key.** A handle is pinned to the ETag it
//!    opened, so an object replaced by another client (new ETag) can never be
//!    served from blocks of the old version, even without an invalidation.
//!    Old-version blocks simply age out (or go at once with
//!    [`BlockCache::invalidate_object`] when this mount itself replaced the
//!    object).
//! 2. **The bound is on bytes, not entries,** because the last block of an
//!    object is shorter: counting entries would over- or under-commit memory.
//!    Only the payload (`Bytes::len`) is counted; per-entry overhead (key
//!    strings, map nodes, ~100 bytes plus the key and ETag) is negligible
//!    beside 1 MiB blocks but is not part of the bound.
//! 3. **A value larger than the whole capacity is not cached** (caching it
//!    would first evict everything else, then still break the bound). Empty
//!    values are not cached either: they would cost no bytes, so entries of
//!    them would grow without bound, and no read ever needs an empty block.
//!    In both cases an existing entry under the same key is dropped, so after
//!    `insert(k, v)` the cache holds `v` or nothing for `k`, never an older
//!    value.
//! 4. **Evicted values are dropped after the lock is released.** Freeing the
//!    last reference to a 1 MiB buffer may be a `munmap` system call; doing
//!    that under the lock would stall every other reader of the mount.
//! 5. **The lock is held only for map operations,** never across I/O: the
//!    caller fetches a missing block without holding anything, then inserts
//!    it. Two handles missing the same block at once may both fetch it; the
//!    second insert just replaces the first (same key, hence same bytes).
//! 6. **A `Bytes` sliced from a larger buffer shares that buffer.** The
//!    bound counts `len()`, so a block cut with `Bytes::slice` out of an
//!    8 MiB ranged GET keeps the whole 8 MiB allocation alive until every
//!    slice of it is gone. Memory stays bounded (by at most part size /
//!    block size times the capacity) but callers wanting the bound to be
//!    exact should insert blocks that own their memory.
//! 7. **Hits and misses count `get` calls,** not bytes: they measure how
//!    often the read path found a block ready, which is what a hit ratio in
//!    a benchmark report needs.
//! 8. **Blocks being fetched are bounded too.** Every handle's readahead
//!    window is capped, but the number of handles is the user's: 64
//!    readers with 64 MiB windows would hold 4 GiB of fetches in flight.
//!    Fetches take [`BlockCache::reserve_fetch`] permits first, one per
//!    block, `capacity / block_size` in all, so blocks in flight never pass
//!    the cache's capacity either; a fetch waits (it is never refused)
//!    until earlier ones land.

use super::disk::DiskCache;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Identifies one block of one version of one object.
///
/// Field order matters: the derived ordering sorts by object first, so all
/// blocks of one object (every ETag) are one contiguous range of the cache's
/// ordered map, which is what makes `invalidate_object` cheap.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockKey {
    /// Object key in the bucket.
    pub object: String,
    /// ETag of the version the block was read from (subtle case 1).
    pub etag: String,
    /// Block index: the block holds bytes `index * block_size ..`.
    pub index: u64,
}

impl BlockKey {
    /// Convenience constructor.
    pub fn new(object: impl Into<String>, etag: impl Into<String>, index: u64) -> Self {
        BlockKey {
            object: object.into(),
            etag: etag.into(),
            index,
        }
    }
}

/// Counters and current occupancy of a [`BlockCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get` calls that found the block.
    pub hits: u64,
    /// `get` calls that did not.
    pub misses: u64,
    /// Payload bytes currently cached (always `<=` the capacity).
    pub bytes: u64,
    /// Blocks currently cached.
    pub blocks: u64,
    /// Blocks dropped to make room (not counting invalidations or
    /// replacements of the same key).
    pub evictions: u64,
}

/// Shared, byte-bounded LRU cache of object blocks. See the module docs.
pub struct BlockCache {
    capacity: u64,
    block_size: u64,
    /// The disk tier (`-o disk_cache`), which the readers consult before
    /// the server and fill after it.
    disk: Option<Arc<DiskCache>>,
    inner: Mutex<Inner>,
    /// Blocks that fetches may hold in flight (subtle case 8).
    fetching: Arc<tokio::sync::Semaphore>,
    fetch_permits: u64,
}

struct Entry {
    data: Bytes,
    /// Position in `Inner::recency`.
    tick: u64,
}

struct Inner {
    /// `Arc` so the key is allocated once and shared with `recency`;
    /// `Arc<BlockKey>: Borrow<BlockKey>` lets lookups use a plain `&BlockKey`.
    entries: BTreeMap<Arc<BlockKey>, Entry>,
    /// Recency order: smallest tick = least recently used.
    recency: BTreeMap<u64, Arc<BlockKey>>,
    /// Next tick to hand out; strictly increasing (a u64 cannot wrap in
    /// practice: 2^64 cache operations).
    next_tick: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        let t = self.next_tick;
        self.next_tick += 1;
        t
    }

    /// Removes `key` from both maps, returning its value.
    fn remove(&mut self, key: &BlockKey) -> Option<Bytes> {
        let entry = self.entries.remove(key)?;
        self.recency.remove(&entry.tick);
        self.bytes -= entry.data.len() as u64;
        Some(entry.data)
    }
}

impl BlockCache {
    /// A cache holding at most `capacity_bytes` bytes of blocks of
    /// `block_size` bytes each (the last block of an object may be shorter).
    ///
    /// # Panics
    ///
    /// If `block_size` is 0 (no object could be split into blocks).
    pub fn new(capacity_bytes: u64, block_size: u64) -> Self {
        assert!(block_size > 0, "block size must be positive");
        let fetch_permits = (capacity_bytes / block_size).clamp(1, u32::MAX as u64 >> 3);
        BlockCache {
            capacity: capacity_bytes,
            block_size,
            disk: None,
            fetching: Arc::new(tokio::sync::Semaphore::new(fetch_permits as usize)),
            fetch_permits,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                recency: BTreeMap::new(),
                next_tick: 0,
                bytes: 0,
                hits: 0,
                misses: 0,
                evictions: 0,
            }),
        }
    }

    /// The same cache with `disk` as its disk tier.
    pub fn with_disk(mut self, disk: Arc<DiskCache>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// The disk tier, if there is one.
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// Size of a (non-final) block in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Waits until `blocks` more blocks may be in flight (subtle case 8);
    /// they may while the permit lives. A fetch larger than the whole
    /// budget takes all of it.
    pub async fn reserve_fetch(&self, blocks: u64) -> tokio::sync::OwnedSemaphorePermit {
        let n = blocks.clamp(1, self.fetch_permits) as u32;
        self.fetching
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the fetch budget is never closed")
    }

    /// Upper bound on cached payload bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The cached block, if any; a hit makes it the most recently used.
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let mut inner = self.inner.lock();
        let tick = inner.tick();
        let inner = &mut *inner;
        match inner.entries.get_mut(key) {
            Some(entry) => {
                let old = std::mem::replace(&mut entry.tick, tick);
                let data = entry.data.clone();
                // Move the shared key to its new place in the recency order.
                if let Some(k) = inner.recency.remove(&old) {
                    inner.recency.insert(tick, k);
                }
                inner.hits += 1;
                Some(data)
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    /// Caches `data` as block `key`, as the most recently used entry, then
    /// evicts least recently used blocks until the cache is within its
    /// capacity. Empty values and values larger than the capacity are not
    /// cached (subtle case 3).
    pub fn insert(&self, key: BlockKey, data: Bytes) {
        debug_assert!(
            data.len() as u64 <= self.block_size,
            "block {key:?} is {} bytes, larger than the block size {}",
            data.len(),
            self.block_size
        );
        let len = data.len() as u64;
        // Values dropped only once the lock is released (subtle case 4).
        let mut dropped: Vec<Bytes> = Vec::new();
        {
            let mut inner = self.inner.lock();
            if len == 0 || len > self.capacity {
                dropped.extend(inner.remove(&key));
            } else {
                let tick = inner.tick();
                let key = Arc::new(key);
                let old = inner.entries.insert(key.clone(), Entry { data, tick });
                if let Some(old) = old {
                    inner.recency.remove(&old.tick);
                    inner.bytes -= old.data.len() as u64;
                    dropped.push(old.data);
                }
                inner.recency.insert(tick, key);
                inner.bytes += len;
                // The new entry has the largest tick and fits on its own, so
                // the loop stops before reaching it.
                while inner.bytes > self.capacity {
                    let Some((_, lru)) = inner.recency.pop_first() else {
                        break;
                    };
                    if let Some(entry) = inner.entries.remove(&*lru) {
                        inner.bytes -= entry.data.len() as u64;
                        inner.evictions += 1;
                        dropped.push(entry.data);
                    }
                }
            }
        }
        drop(dropped);
    }

    /// Drops every cached block of `object`, whatever its ETag. Returns how
    /// many blocks were dropped.
    pub fn invalidate_object(&self, object: &str) -> usize {
        // Smallest possible key of this object: "" sorts before any ETag.
        let first = BlockKey::new(object, "", 0);
        let mut dropped: Vec<Bytes> = Vec::new();
        {
            let mut inner = self.inner.lock();
            let keys: Vec<Arc<BlockKey>> = inner
                .entries
                .range::<BlockKey, _>(&first..)
                .take_while(|(k, _)| k.object == object)
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                dropped.extend(inner.remove(&key));
            }
        }
        dropped.len()
    }

    /// Current counters and occupancy.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock();
        CacheStats {
            hits: inner.hits,
            misses: inner.misses,
            bytes: inner.bytes,
            blocks: inner.entries.len() as u64,
            evictions: inner.evictions,
        }
    }

    /// Checks the internal bookkeeping; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        let inner = self.inner.lock();
        assert_eq!(inner.entries.len(), inner.recency.len());
        let sum: u64 = inner.entries.values().map(|e| e.data.len() as u64).sum();
        assert_eq!(sum, inner.bytes, "byte count drifted");
        assert!(inner.bytes <= self.capacity, "byte bound broken");
        for (key, entry) in &inner.entries {
            assert_eq!(inner.recency.get(&entry.tick), Some(key));
        }
    }
}

impl fmt::Debug for BlockCache {
    /// Occupancy and counters only: dumping block contents would be useless
    /// and huge.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockCache")
            .field("capacity", &self.capacity)
            .field("block_size", &self.block_size)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Indices of the blocks covering `range` of an object of `object_size`
/// bytes, clipped to the object: bytes at or past `object_size` need no
/// block. An empty result (`0..0`) means nothing to read (empty range, or a
/// range starting at or past the end of the object).
///
/// # Panics
///
/// If `block_size` is 0.
pub fn blocks_for(range: Range<u64>, object_size: u64, block_size: u64) -> Range<u64> {
    assert!(block_size > 0, "block size must be positive");
    let end = range.end.min(object_size);
    if range.start >= end {
        return 0..0;
    }
    range.start / block_size..end.div_ceil(block_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(object: &str, index: u64) -> BlockKey {
        BlockKey::new(object, "etag1", index)
    }

    fn bytes(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn lru_order_evicts_least_recently_used() {
        let cache = BlockCache::new(30, 10);
        cache.insert(key("o", 0), bytes(10, 0));
        cache.insert(key("o", 1), bytes(10, 1));
        cache.insert(key("o", 2), bytes(10, 2));
        // Touch block 0: block 1 becomes the least recently used.
        assert!(cache.get(&key("o", 0)).is_some());
        cache.insert(key("o", 3), bytes(10, 3));
        assert!(cache.get(&key("o", 1)).is_none(), "LRU block kept");
        for i in [0, 2, 3] {
            assert_eq!(cache.get(&key("o", i)).unwrap(), bytes(10, i as u8));
        }
        // Now 0 is least recently used among 0, 2, 3 (get order above).
        cache.insert(key("o", 4), bytes(10, 4));
        assert!(cache.get(&key("o", 0)).is_none());
        assert!(cache.get(&key("o", 2)).is_some());
        cache.check_invariants();
    }

    #[test]
    fn reinserting_a_key_refreshes_it_and_replaces_the_value() {
        let cache = BlockCache::new(30, 10);
        cache.insert(key("o", 0), bytes(10, 0));
        cache.insert(key("o", 1), bytes(10, 1));
        cache.insert(key("o", 2), bytes(10, 2));
        cache.insert(key("o", 0), bytes(5, 9)); // refresh + shrink
        assert_eq!(cache.stats().bytes, 25);
        cache.insert(key("o", 3), bytes(10, 3)); // 35 > 30: evict block 1
        assert!(cache.get(&key("o", 1)).is_none());
        assert_eq!(cache.get(&key("o", 0)).unwrap(), bytes(5, 9));
        assert_eq!(cache.stats().evictions, 1);
        cache.check_invariants();
    }

    #[test]
    fn byte_bound_holds_with_uneven_block_sizes() {
        let cache = BlockCache::new(100, 64);
        let sizes = [40usize, 30, 20, 25, 64, 1, 7, 50, 13, 64, 3];
        for (i, &len) in sizes.iter().enumerate() {
            cache.insert(key("o", i as u64), bytes(len, i as u8));
            let s = cache.stats();
            assert!(s.bytes <= 100, "after {i}: {} bytes cached", s.bytes);
            cache.check_invariants();
        }
        // 40 + 30 + 20 = 90; adding 25 must evict exactly the 40-byte block.
        let cache = BlockCache::new(100, 64);
        for (i, len) in [40usize, 30, 20].into_iter().enumerate() {
            cache.insert(key("p", i as u64), bytes(len, 0));
        }
        cache.insert(key("p", 3), bytes(25, 0));
        let s = cache.stats();
        assert_eq!((s.bytes, s.blocks, s.evictions), (75, 3, 1));
        assert!(cache.get(&key("p", 0)).is_none());
    }

    #[test]
    fn oversize_and_empty_values_are_not_cached() {
        let cache = BlockCache::new(10, 16);
        cache.insert(key("o", 0), bytes(4, 0));
        cache.insert(key("o", 1), bytes(11, 1));
        assert!(cache.get(&key("o", 1)).is_none());
        // The small block was not evicted to make room for a hopeless value.
        assert!(cache.get(&key("o", 0)).is_some());
        let s = cache.stats();
        assert_eq!((s.bytes, s.blocks, s.evictions), (4, 1, 0));

        // Exactly the capacity fits (and evicts the rest).
        cache.insert(key("o", 2), bytes(10, 2));
        assert!(cache.get(&key("o", 2)).is_some());
        assert_eq!(cache.stats().bytes, 10);

        // An uncacheable value under an existing key drops the old value.
        cache.insert(key("o", 2), bytes(12, 3));
        assert!(cache.get(&key("o", 2)).is_none());
        cache.insert(key("o", 3), bytes(3, 3));
        cache.insert(key("o", 3), Bytes::new());
        assert!(cache.get(&key("o", 3)).is_none());
        assert_eq!(cache.stats().bytes, 0);
        cache.check_invariants();

        let nothing = BlockCache::new(0, 16);
        nothing.insert(key("o", 0), bytes(1, 0));
        assert!(nothing.get(&key("o", 0)).is_none());
    }

    #[test]
    fn etag_is_part_of_the_key() {
        let cache = BlockCache::new(100, 10);
        cache.insert(BlockKey::new("o", "v1", 0), bytes(10, 1));
        assert!(cache.get(&BlockKey::new("o", "v2", 0)).is_none());
        cache.insert(BlockKey::new("o", "v2", 0), bytes(10, 2));
        assert_eq!(cache.get(&BlockKey::new("o", "v1", 0)).unwrap()[0], 1);
        assert_eq!(cache.get(&BlockKey::new("o", "v2", 0)).unwrap()[0], 2);
        assert_eq!(cache.stats().blocks, 2);
    }

    #[test]
    fn invalidate_object_drops_every_etag_and_nothing_else() {
        let cache = BlockCache::new(1000, 10);
        // Neighbours in key order: prefixes and extensions of "a".
        let objects = ["", "a", "a/b", "a\0", "ab", "`", "b"];
        for obj in objects {
            for etag in ["", "x", "y"] {
                for i in 0..3 {
                    cache.insert(BlockKey::new(obj, etag, i), bytes(1, 0));
                }
            }
        }
        assert_eq!(cache.invalidate_object("a"), 9);
        assert_eq!(cache.invalidate_object("a"), 0);
        for obj in objects {
            let present = cache.get(&BlockKey::new(obj, "x", 1)).is_some();
            assert_eq!(present, obj != "a", "object {obj:?}");
        }
        assert_eq!(cache.stats().blocks, 6 * 9);
        assert_eq!(cache.invalidate_object(""), 9);
        assert_eq!(cache.invalidate_object("zzz"), 0);
        assert_eq!(cache.stats().evictions, 0, "invalidation is no eviction");
        cache.check_invariants();
    }

    #[test]
    fn stats_count_hits_misses_and_evictions() {
        let cache = BlockCache::new(20, 10);
        assert_eq!(cache.stats(), CacheStats::default());
        assert!(cache.get(&key("o", 0)).is_none());
        cache.insert(key("o", 0), bytes(10, 0));
        cache.insert(key("o", 1), bytes(7, 0));
        assert!(cache.get(&key("o", 0)).is_some());
        assert!(cache.get(&key("o", 0)).is_some());
        cache.insert(key("o", 2), bytes(10, 0)); // evicts block 1
        assert!(cache.get(&key("o", 1)).is_none());
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 2,
                bytes: 20,
                blocks: 2,
                evictions: 1,
            }
        );
        assert_eq!(cache.block_size(), 10);
        assert_eq!(cache.capacity(), 20);
    }

    #[test]
    fn concurrent_use_keeps_the_byte_bound() {
        const CAPACITY: u64 = 5_000;
        const OPS: usize = 5_000;
        let cache = BlockCache::new(CAPACITY, 512);
        // The value is derived from the key, so any hit can be checked
        // whichever thread inserted it.
        let fill = |k: &BlockKey| (k.index as u8) ^ k.object.as_bytes()[0];
        let gets: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4u64)
                .map(|t| {
                    let cache = &cache;
                    s.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(t);
                        let mut gets = 0u64;
                        for _ in 0..OPS {
                            let obj = ["a", "b", "c"][rng.usize(0..3)];
                            let k = BlockKey::new(obj, "e", rng.u64(0..40));
                            match rng.u8(0..10) {
                                0..=4 => {
                                    let v = bytes(rng.usize(1..=512), fill(&k));
                                    cache.insert(k, v);
                                }
                                5..=8 => {
                                    gets += 1;
                                    if let Some(v) = cache.get(&k) {
                                        assert!(v.iter().all(|&b| b == fill(&k)));
                                    }
                                }
                                _ => {
                                    cache.invalidate_object(obj);
                                }
                            }
                            assert!(cache.stats().bytes <= CAPACITY);
                        }
                        gets
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        cache.check_invariants();
        let s = cache.stats();
        assert_eq!(s.hits + s.misses, gets, "every get counted exactly once");
        assert!(
            s.hits > 0 && s.evictions > 0,
            "the test never filled the cache"
        );
    }

    #[test]
    fn blocks_for_covers_and_clips() {
        // Block size 10, object of 25 bytes: blocks 0, 1, 2 (last is 5 bytes).
        assert_eq!(blocks_for(0..1, 25, 10), 0..1);
        assert_eq!(blocks_for(0..10, 25, 10), 0..1);
        assert_eq!(blocks_for(0..11, 25, 10), 0..2);
        assert_eq!(blocks_for(9..11, 25, 10), 0..2);
        assert_eq!(blocks_for(10..20, 25, 10), 1..2);
        assert_eq!(blocks_for(19..100, 25, 10), 1..3);
        assert_eq!(blocks_for(24..25, 25, 10), 2..3);
        assert!(blocks_for(25..30, 25, 10).is_empty());
        assert!(blocks_for(30..40, 25, 10).is_empty());
        assert!(blocks_for(5..5, 25, 10).is_empty());
        assert!(blocks_for(0..10, 0, 10).is_empty());
        assert_eq!(blocks_for(0..u64::MAX, 30, 10), 0..3);
        assert_eq!(blocks_for(0..u64::MAX, u64::MAX, 1 << 20).end, 1 << 44);
    }
}
