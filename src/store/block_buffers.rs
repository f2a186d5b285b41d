//! Reusable fixed-size buffers for the blocks a ranged GET is cut into
//! ([`ObjectStore::get_object_blocks`](super::ObjectStore::get_object_blocks)).
//!
//! A cold sequential read fills one block buffer per MiB at network speed.
//! Taken from the allocator, each is fresh memory whose first touch costs a
//! page fault per 4 KiB; on the virtual machines measured here that cost
//! more CPU than the rest of a fresh mount's first read (README, "Read
//! performance"). A [`BufferPool`] instead carves buffers out of large
//! anonymous mappings advised for transparent huge pages (one fault per
//! 2 MiB where the kernel grants them), and a dropped buffer goes back to
//! the pool for the next block rather than to the allocator.
//!
//! Subtle cases:
//! 1. **The pool only grows.** Its size is the peak number of buffers alive
//!    at once: the block cache's capacity plus the fetches in flight and
//!    the blocks readers still hold. That peak is bounded by the mount's
//!    configuration, and keeping it avoids refaulting the same memory on
//!    every read; the mappings are released when the pool is dropped.
//! 2. **Fallback.** If a mapping cannot be made (address space or memory
//!    limits), [`BufferPool::take`] returns `None` and the caller uses an
//!    ordinary heap buffer; the read goes on either way.
//! 3. **Ownership.** A [`BlockBuf`] is the only handle to its slot while it
//!    is filled; frozen into [`Bytes`] it is shared read-only, and the slot
//!    returns to the free list when the last `Bytes` referring to it drops.

use bytes::Bytes;
use memmap2::{Advice, MmapMut};
use parking_lot::Mutex;
use std::sync::Arc;

/// Size of each mapping: 32 MiB is sixteen 2 MiB huge pages and 32 default
/// (1 MiB) blocks, so the pool grows in steps small next to the default
/// 256 MiB block cache.
const SLAB_BYTES: usize = 32 << 20;

/// A pool of `block_size` buffers. Cheap to share through its `Arc`.
pub struct BufferPool {
    block_size: usize,
    free: Mutex<Vec<Slot>>,
}

/// One mapping, never moved or unmapped while a slot of it is in use (each
/// slot holds an `Arc` to it). All access goes through `base`, taken from
/// the mapping once, mutably, when it was made.
#[derive(Debug)]
struct Slab {
    base: *mut u8,
    _map: MmapMut,
}

// SAFETY: `base` points into `_map`, which the slab owns; the bytes are
// only written by the one `BlockBuf` holding a slot, before any other
// reference to that slot exists (subtle case 3), and only read afterwards.
unsafe impl Send for Slab {}
// SAFETY: as above.
unsafe impl Sync for Slab {}

/// A `block_size` region of a slab.
#[derive(Debug)]
struct Slot {
    slab: Arc<Slab>,
    offset: usize,
}

impl BufferPool {
    /// A pool of buffers of `block_size` bytes (at least 1).
    pub fn new(block_size: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            block_size: block_size.max(1),
            free: Mutex::new(Vec::new()),
        })
    }

    /// The size of every buffer.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// An empty buffer, or `None` when no memory could be mapped (subtle
    /// case 2).
    pub fn take(self: &Arc<Self>) -> Option<BlockBuf> {
        // The lock is released before `grow`, which takes it again.
        let reused = self.free.lock().pop();
        let slot = match reused {
            Some(slot) => slot,
            None => self.grow()?,
        };
        Some(BlockBuf {
            slot: Some(slot),
            len: 0,
            pool: self.clone(),
        })
    }

    /// Maps one more slab, keeps all its slots but one in the free list and
    /// returns that one.
    fn grow(&self) -> Option<Slot> {
        let per_slab = (SLAB_BYTES / self.block_size).max(1);
        let mut map = MmapMut::map_anon(per_slab * self.block_size).ok()?;
        // Only advice: without huge pages the buffers work the same.
        let _ = map.advise(Advice::HugePage);
        let slab = Arc::new(Slab {
            base: map.as_mut_ptr(),
            _map: map,
        });
        let mut slots = (0..per_slab).map(|i| Slot {
            slab: slab.clone(),
            offset: i * self.block_size,
        });
        let first = slots.next();
        self.free.lock().extend(slots);
        first
    }

    /// Buffers currently in the free list (for tests).
    pub fn free_buffers(&self) -> usize {
        self.free.lock().len()
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("block_size", &self.block_size)
            .field("free", &self.free_buffers())
            .finish()
    }
}

/// A buffer being filled, from the pool when it has memory, else from the
/// heap (subtle case 2); [`FillingBlock::freeze`] makes it [`Bytes`].
pub enum FillingBlock {
    Pooled(BlockBuf),
    Heap(bytes::BytesMut),
}

impl FillingBlock {
    /// An empty buffer of `size` bytes: from `pool` if it has that block
    /// size and memory, else from the heap.
    pub fn new(pool: Option<&Arc<BufferPool>>, size: usize) -> FillingBlock {
        pool.filter(|p| p.block_size == size)
            .and_then(|p| p.take())
            .map_or_else(
                || FillingBlock::Heap(bytes::BytesMut::with_capacity(size)),
                FillingBlock::Pooled,
            )
    }

    pub fn len(&self) -> usize {
        match self {
            FillingBlock::Pooled(b) => b.len(),
            FillingBlock::Heap(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data`; a pooled buffer must have room for it.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        match self {
            FillingBlock::Pooled(b) => b.extend_from_slice(data),
            FillingBlock::Heap(b) => b.extend_from_slice(data),
        }
    }

    pub fn freeze(self) -> Bytes {
        match self {
            FillingBlock::Pooled(b) => b.freeze(),
            FillingBlock::Heap(b) => b.freeze(),
        }
    }
}

/// A buffer of the pool being filled; [`BlockBuf::freeze`] makes it
/// [`Bytes`].
#[derive(Debug)]
pub struct BlockBuf {
    /// Always `Some` until dropped.
    slot: Option<Slot>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl BlockBuf {
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left before the buffer is full.
    pub fn remaining(&self) -> usize {
        self.pool.block_size - self.len
    }

    /// Appends `data`, which must fit in [`BlockBuf::remaining`].
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        assert!(data.len() <= self.remaining(), "block buffer overflow");
        let slot = self.slot.as_ref().expect("slot present until drop");
        let start = slot.offset + self.len;
        // SAFETY: the slot's region [offset, offset + block_size) of the
        // mapping belongs to this buffer alone (subtle case 3): it was
        // taken from the free list, and no `Bytes` of it exists before
        // `freeze`, which consumes the buffer. The write stays inside the
        // region (checked above), and the mapping lives as long as `slot`'s
        // `Arc`.
        unsafe {
            let dst = slot.slab.base.add(start);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        self.len += data.len();
    }

    /// The filled bytes as shared, immutable [`Bytes`]; the slot returns to
    /// the pool when the last of them is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for BlockBuf {
    fn as_ref(&self) -> &[u8] {
        let slot = self.slot.as_ref().expect("slot present until drop");
        // SAFETY: the first `len` bytes of the slot were written by
        // `extend_from_slice` and lie inside the mapping, which outlives
        // the borrow of `self` (it holds the slab's `Arc`); no write to
        // them can happen while `&self` is borrowed.
        unsafe { std::slice::from_raw_parts(slot.slab.base.add(slot.offset), self.len) }
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.free.lock().push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_filled_frozen_and_reused() {
        let pool = BufferPool::new(1 << 20);
        let mut a = pool.take().expect("a mapping");
        assert!(a.is_empty());
        a.extend_from_slice(b"hello ");
        a.extend_from_slice(b"world");
        assert_eq!((a.len(), a.remaining()), (11, (1 << 20) - 11));
        let free = pool.free_buffers();
        assert_eq!(free, SLAB_BYTES / (1 << 20) - 1);
        let bytes = a.freeze();
        let copy = bytes.slice(6..);
        assert_eq!(&bytes[..], b"hello world");
        drop(bytes);
        // Still referenced by the slice: not back in the pool yet.
        assert_eq!(pool.free_buffers(), free);
        assert_eq!(&copy[..], b"world");
        drop(copy);
        assert_eq!(pool.free_buffers(), free + 1);
    }

    #[test]
    fn two_buffers_never_share_bytes() {
        let pool = BufferPool::new(4096);
        let mut bufs: Vec<BlockBuf> = (0..3).map(|_| pool.take().unwrap()).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            b.extend_from_slice(&vec![i as u8; 4096]);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.as_ref().iter().all(|&x| x == i as u8), "buffer {i}");
        }
    }

    #[test]
    #[should_panic(expected = "block buffer overflow")]
    fn overfilling_is_refused() {
        let pool = BufferPool::new(8);
        pool.take().unwrap().extend_from_slice(&[0; 9]);
    }
}
