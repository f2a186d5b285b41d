//! The disk tier of the block cache (`-o disk_cache=DIR`): blocks fetched
//! from the server are also kept as files under `DIR`, bounded in bytes by
//! `disk_cache_size` with least-recently-used eviction, so a file read
//! twice, or read at random after its blocks left the memory cache, is not
//! downloaded again.
//!
//! Layout: one directory per mount, `DIR/bucketfs-<pid>`, holding one file
//! per block, named by the SHA-256 of the block's key (object, ETag,
//! index). The index of what is on disk (key -> length, in recency order)
//! lives in memory: about 200 bytes per block plus the key, so at most
//! `disk_cache_size / block_size` entries.
//!
//! Subtle cases:
//!
//! 1. **Checked against the ETag.** The ETag is part of the key, as in the
//!    memory tier: a block of a replaced object is never served, because
//!    readers are pinned to the ETag they opened. A block whose file has
//!    the wrong length (cut short by a full disk or another process) is
//!    dropped and fetched again.
//! 2. **It lasts for the mount's life.** The directory is emptied when the
//!    mount starts and removed when it ends; directories left by mounts
//!    that died (their pid is gone) are removed at the next start. Carrying
//!    blocks across mounts would need a persistent index; the ETag check
//!    would keep that safe, but it is not done yet.
//! 3. **Never in the way.** Every disk error (full disk, removed directory)
//!    only costs the cache: the block is fetched from the server as
//!    without a disk cache, and the error is logged once.
//! 4. **Writes are bounded.** Blocks wait for their write in memory; at
//!    most `pending_limit` bytes may wait. A fetch whose blocks would pass
//!    it waits for earlier writes to land, so the reads of a mount slow to
//!    the disk's pace rather than the cache silently missing blocks (a file
//!    read twice is downloaded once, as long as it fits). A block that
//!    memory evicts before its write has landed may still be fetched a
//!    second time: the write is not waited for, so that reads do not pay
//!    the disk's latency.
//! 5. **Whole files only.** A block is written to a temporary name of its own and
//!    renamed into place, so a reader never sees half a block.
//! 6. **Eviction outside the lock.** Files are unlinked after the index
//!    lock is released; a reader that finds an entry whose file is being
//!    unlinked gets a miss and fetches from the server.
//! 7. **Small reads on the async thread.** A part of at most 128 KiB (one
//!    FUSE read) is read where the read runs, not on tokio's blocking
//!    pool: the hand-off to another thread and back cost more than the
//!    read itself when the file is in the page cache, which is the
//!    common case (fio 4 KiB random reads of a cached 1 GiB file, on the
//!    emulator: 13,400 IOPS through the blocking pool, 24,800 inline). A
//!    read from a cold disk holds the thread for one disk access, as a
//!    page fault would.

use super::block::BlockKey;
use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most bytes the write bound may count (a tokio semaphore takes at most
/// `u32::MAX` permits at once and `usize::MAX >> 3` in all).
const MAX_PENDING_PERMITS: u64 = u32::MAX as u64;

/// Prefix of the per-mount directories under `DIR`.
const MOUNT_DIR_PREFIX: &str = "bucketfs-";

/// Counters of a [`DiskCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskCacheStats {
    /// Blocks read from disk instead of the server.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Bytes of blocks on disk now (always `<=` the capacity).
    pub bytes: u64,
    /// Blocks written.
    pub writes: u64,
}

/// The disk tier. See the module docs.
pub struct DiskCache {
    dir: PathBuf,
    capacity: u64,
    /// Bytes of blocks that may wait for their write, as permits
    /// (subtle case 4).
    pending_limit: u64,
    pending: Arc<tokio::sync::Semaphore>,
    index: Mutex<Index>,
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    /// Numbers the temporary files of writes (subtle case 5).
    writes_started: AtomicU64,
    /// Set once an error has been logged (subtle case 3).
    warned: AtomicBool,
}

struct Index {
    entries: LruCache<BlockKey, u64>,
    bytes: u64,
}

impl DiskCache {
    /// A cache of at most `capacity` bytes in a fresh directory of this
    /// process under `parent` (created if missing), after removing the
    /// directories of mounts that are gone (subtle case 2).
    pub fn open(parent: &Path, capacity: u64, pending_limit: u64) -> io::Result<DiskCache> {
        fs::create_dir_all(parent)?;
        remove_dead_mount_dirs(parent);
        let dir = parent.join(format!("{MOUNT_DIR_PREFIX}{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir(&dir)?;
        let pending_limit = pending_limit.clamp(1, MAX_PENDING_PERMITS);
        Ok(DiskCache {
            dir,
            capacity,
            pending_limit,
            pending: Arc::new(tokio::sync::Semaphore::new(pending_limit as usize)),
            index: Mutex::new(Index {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            writes_started: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        })
    }

    /// The directory of this mount's blocks.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Upper bound on the bytes of blocks on disk.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn stats(&self) -> DiskCacheStats {
        DiskCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.index.lock().bytes,
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    fn path_of(&self, key: &BlockKey) -> PathBuf {
        let mut hash = Sha256::new();
        for part in [key.object.as_bytes(), key.etag.as_bytes()] {
            // Lengths first, so ("ab", "c") and ("a", "bc") differ.
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        hash.update(key.index.to_le_bytes());
        self.dir.join(hex::encode(hash.finalize()))
    }

    /// The block under `key`, if it is on disk with `len` bytes. Blocking:
    /// call it off the async runtime's worker threads.
    pub fn read(&self, key: &BlockKey, len: u64) -> Option<Bytes> {
        self.read_part(key, len, 0..len)
    }

    /// Whether the block under `key` is on disk with `len` bytes; a yes
    /// makes it the most recently used (it is about to be read).
    pub fn contains(&self, key: &BlockKey, len: u64) -> bool {
        self.index.lock().entries.get(key) == Some(&len)
    }

    /// Bytes `part` of the block under `key` (of `len` bytes), read alone:
    /// a 4 KiB random read costs a 4 KiB read of the file, not of the
    /// block. Blocking, like `read`.
    pub fn read_part(&self, key: &BlockKey, len: u64, part: Range<u64>) -> Option<Bytes> {
        use std::os::unix::fs::FileExt;
        if !self.contains(key, len) || part.end > len || part.start > part.end {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let path = self.path_of(key);
        let read = (|| {
            let file = fs::File::open(&path)?;
            let on_disk = file.metadata()?.len();
            if on_disk != len {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("holds {on_disk} bytes, not the block's {len}"),
                ));
            }
            // At most one block: `len` is the length a reader's layout
            // gives the block, and the index holds it only for a block
            // that was written with it.
            let mut data = vec![0u8; (part.end - part.start) as usize];
            file.read_exact_at(&mut data, part.start)?;
            Ok::<_, io::Error>(data)
        })();
        match read {
            Ok(data) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(Bytes::from(data))
            }
            Err(e) => {
                // A file unlinked by eviction is a plain miss (subtle
                // case 6); anything else is logged once. Either way the
                // block is dropped.
                if e.kind() != io::ErrorKind::NotFound {
                    self.warn(&format!("reading {}", path.display()), &e);
                }
                self.forget(key);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Writes `blocks`, evicting the least recently used blocks beyond the
    /// capacity. Blocking, like `read`.
    pub fn write(&self, blocks: &[(BlockKey, Bytes)]) {
        for (key, data) in blocks {
            self.write_one(key, data);
        }
    }

    fn write_one(&self, key: &BlockKey, data: &Bytes) {
        let len = data.len() as u64;
        if len == 0 || len > self.capacity {
            return;
        }
        if self.index.lock().entries.peek(key) == Some(&len) {
            return; // another fetch of the same block wrote it
        }
        let path = self.path_of(key);
        // A name of its own: two fetches of one block may write it at once.
        let tmp = path.with_extension(format!(
            "tmp{}",
            self.writes_started.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(data)?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            self.warn(&format!("writing {}", path.display()), &e);
            return;
        }
        self.writes.fetch_add(1, Ordering::Relaxed);
        let mut evicted = Vec::new();
        {
            let mut index = self.index.lock();
            if let Some(old) = index.entries.put(key.clone(), len) {
                index.bytes -= old;
            }
            index.bytes += len;
            while index.bytes > self.capacity {
                let Some((old_key, old_len)) = index.entries.pop_lru() else {
                    break;
                };
                index.bytes -= old_len;
                evicted.push(old_key);
            }
        }
        for old in evicted {
            let _ = fs::remove_file(self.path_of(&old));
        }
    }

    /// Drops `key` from the index and its file from the disk.
    fn forget(&self, key: &BlockKey) {
        let removed = {
            let mut index = self.index.lock();
            let removed = index.entries.pop(key);
            if let Some(len) = removed {
                index.bytes -= len;
            }
            removed
        };
        if removed.is_some() {
            let _ = fs::remove_file(self.path_of(key));
        }
    }

    fn warn(&self, what: &str, e: &io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "disk cache: {what}: {e}; blocks that cannot be cached are fetched from the server (logged once)"
            );
        }
    }

    /// Removes the mount's directory and every block in it (subtle case 2).
    pub fn remove_dir(&self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for DiskCache {
    /// The blocks last only for the mount's life (subtle case 2).
    fn drop(&mut self) {
        self.remove_dir();
    }
}

/// Removes `parent/bucketfs-<pid>` directories whose process is gone.
fn remove_dead_mount_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(MOUNT_DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Reads `keys` (with their lengths) from `disk` on a blocking thread: all
/// of them, or `None` if any is missing.
pub async fn read_run(disk: &Arc<DiskCache>, keys: Vec<(BlockKey, u64)>) -> Option<Vec<Bytes>> {
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || {
        keys.iter()
            .map(|(key, len)| disk.read(key, *len))
            .collect::<Option<Vec<Bytes>>>()
    })
    .await
    .ok()
    .flatten()
}

/// Largest part read on the calling task's thread (subtle case 7).
const INLINE_READ_MAX: u64 = 128 << 10;

/// [`DiskCache::read_part`]: a part of up to [`INLINE_READ_MAX`] bytes on
/// the calling thread, a longer one on a blocking thread.
pub async fn read_part(
    disk: &Arc<DiskCache>,
    key: BlockKey,
    len: u64,
    part: Range<u64>,
) -> Option<Bytes> {
    if part.end - part.start <= INLINE_READ_MAX {
        return disk.read_part(&key, len, part);
    }
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || disk.read_part(&key, len, part))
        .await
        .ok()
        .flatten()
}

/// Writes `blocks` to `disk` on a blocking thread, once there is room for
/// them to wait (subtle case 4); returns when the write is under way.
pub async fn write_later(disk: &Arc<DiskCache>, blocks: Vec<(BlockKey, Bytes)>) {
    let total: u64 = blocks.iter().map(|(_, b)| b.len() as u64).sum();
    let permits = total.clamp(1, disk.pending_limit) as u32;
    let Ok(room) = disk.pending.clone().acquire_many_owned(permits).await else {
        return; // never closed
    };
    let disk = disk.clone();
    tokio::task::spawn_blocking(move || {
        disk.write(&blocks);
        drop(room);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(object: &str, etag: &str, index: u64) -> BlockKey {
        BlockKey::new(object, etag, index)
    }

    fn cache(dir: &Path, capacity: u64) -> DiskCache {
        DiskCache::open(dir, capacity, 1 << 20).unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bucketfs-disk-cache-test-{}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_written_block_reads_back_under_its_key_and_etag_only() {
        let dir = scratch("roundtrip");
        let c = cache(&dir, 1 << 20);
        c.write(&[(key("a", "e1", 0), Bytes::from_static(b"hello"))]);
        assert_eq!(
            c.read(&key("a", "e1", 0), 5).as_deref(),
            Some(&b"hello"[..])
        );
        // Another version, another block, another length: misses.
        assert_eq!(c.read(&key("a", "e2", 0), 5), None);
        assert_eq!(c.read(&key("a", "e1", 1), 5), None);
        assert_eq!(c.read(&key("a", "e1", 0), 4), None);
        let s = c.stats();
        assert_eq!((s.hits, s.writes, s.bytes), (1, 1, 5));
        drop(c);
        assert!(
            fs::read_dir(&dir).unwrap().next().is_none(),
            "the mount's directory is removed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_least_recently_used_blocks_go_first_and_the_bound_holds() {
        let dir = scratch("lru");
        let c = cache(&dir, 30);
        let block = Bytes::from(vec![7u8; 10]);
        for i in 0..3 {
            c.write(&[(key("o", "e", i), block.clone())]);
        }
        // Touch block 0, so block 1 is the least recently used.
        assert!(c.read(&key("o", "e", 0), 10).is_some());
        c.write(&[(key("o", "e", 3), block.clone())]);
        assert!(c.read(&key("o", "e", 1), 10).is_none());
        for i in [0, 2, 3] {
            assert!(c.read(&key("o", "e", i), 10).is_some(), "block {i}");
        }
        assert_eq!(c.stats().bytes, 30);
        let files = fs::read_dir(c.dir()).unwrap().count();
        assert_eq!(files, 3, "evicted files are unlinked");
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_part_of_a_block_is_read_alone() {
        let dir = scratch("part");
        let c = cache(&dir, 100);
        let k = key("o", "e", 0);
        c.write(&[(k.clone(), Bytes::from_static(b"0123456789"))]);
        assert_eq!(c.read_part(&k, 10, 3..7).as_deref(), Some(&b"3456"[..]));
        assert_eq!(c.read_part(&k, 10, 8..12), None, "past the block");
        assert_eq!(c.read_part(&k, 9, 0..2), None, "another length");
        // A file cut short since it was written is dropped.
        fs::write(c.path_of(&k), b"01234").unwrap();
        assert_eq!(c.read_part(&k, 10, 0..2), None);
        assert!(!c.contains(&k, 10));
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_file_is_a_miss_and_is_dropped() {
        let dir = scratch("damaged");
        let c = cache(&dir, 100);
        let k = key("o", "e", 0);
        c.write(&[(k.clone(), Bytes::from(vec![1u8; 10]))]);
        fs::write(c.path_of(&k), b"short").unwrap();
        assert_eq!(c.read(&k, 10), None);
        assert_eq!(c.stats().bytes, 0);
        assert!(!c.path_of(&k).exists());
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn writes_wait_while_the_bytes_waiting_are_at_the_bound() {
        let dir = scratch("pending");
        let c = Arc::new(DiskCache::open(&dir, 100, 15).unwrap());
        // Everything the bound allows is waiting already.
        let held = c.pending.clone().acquire_many_owned(15).await.unwrap();
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                write_later(&c, vec![(key("o", "e", 0), Bytes::from_static(b"12345"))]).await
            })
        };
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert!(!writer.is_finished(), "the write waits for room");
        assert_eq!(c.stats().writes, 0);
        drop(held);
        writer.await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.stats().writes == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the block was not written"
            );
            tokio::task::yield_now().await;
        }
        assert!(c.contains(&key("o", "e", 0), 5));
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_of_dead_mounts_are_removed_and_live_ones_kept() {
        let dir = scratch("dead");
        fs::create_dir_all(dir.join("bucketfs-999999999")).unwrap();
        fs::create_dir_all(dir.join("bucketfs-1")).unwrap(); // init is alive
        fs::create_dir_all(dir.join("unrelated")).unwrap();
        let c = cache(&dir, 10);
        assert!(!dir.join("bucketfs-999999999").exists());
        assert!(dir.join("bucketfs-1").exists());
        assert!(dir.join("unrelated").exists());
        drop(c);
        fs::remove_dir_all(&dir).unwrap();
    }
}
