//! [`FileReader`]: the read side of one open file handle. It ties the
//! per-handle [`Readahead`] planner, the mount-wide [`BlockCache`] and
//! ETag-pinned ranged GETs together; the FUSE layer calls
//! [`FileReader::read`] for every `read` on the handle.
//!
//! A read asks the planner what to fetch, starts one ranged GET per planned
//! run of missing blocks (in parallel, each in its own Tokio task), then
//! assembles the requested bytes from cached blocks and from the fetches it
//! waits for. Fetched ranges are cut into blocks that land in the cache
//! under `BlockKey { object, etag, index }`.
//!
//! The reader owns a small state behind one `parking_lot` mutex: the
//! planner, the *in-flight map* (block index -> the fetch that will deliver
//! it) and a sticky "stale" flag. The lock is taken only for map and planner
//! operations, never across an `.await`.
//!
//! Subtle cases:
//!
//! 1. **Pinning.** The handle is pinned to the ETag and size seen at open.
//!    Every GET carries `If-Match: <etag>`, *and* the response's ETag and
//!    total size are checked too, because some S3-compatible servers and
//!    proxies ignore `If-Match` on GET. An object replaced by another client
//!    gives [`StoreError::PreconditionFailed`] (ESTALE). So do two answers
//!    that can only mean the pinned version is gone: `NoSuchKey` (deleted)
//!    and `InvalidRange` (every range the reader asks for lies inside the
//!    pinned size, so a 416 means the object shrank). A response without an
//!    ETag is accepted on the strength of `If-Match`: refusing it would make
//!    every read fail on such a server.
//! 2. **Stale is sticky.** Once a fetch has seen the object change, every
//!    later read of the handle fails with `PreconditionFailed` without a
//!    request, even one the cache could serve: the handle's snapshot can no
//!    longer be completed, and a file that reads fine at one offset and
//!    fails at another is harder to reason about than a dead handle. Reads
//!    at or past EOF still return empty: they need no bytes at all.
//! 3. **Never mixed bytes.** Every block a read returns comes from a
//!    response validated against the pinned ETag, or from the cache under a
//!    key holding that ETag (block.rs, subtle case 1). A read returns all of
//!    its bytes or an error, never a prefix of old bytes glued to new ones.
//! 4. **Fetches run in spawned tasks, not in the read's future.** FUSE may
//!    drop a read (interrupted request) and other reads may be waiting on a
//!    fetch it started; running the GET inside the dropped future would
//!    leave those waiters on a fetch that never ends. A detached task always
//!    finishes: it lands its blocks, removes its in-flight entries and
//!    publishes the outcome. A drop guard does the same if the task itself
//!    is cancelled (runtime shutdown) or panics, reporting an error, so no
//!    waiter hangs and the planner re-plans the range.
//! 5. **Waiters take bytes from the fetch, not from the cache.** A fetch
//!    publishes its blocks on a `watch` channel. Re-reading them from the
//!    cache would break with a cache smaller than a read or a window: blocks
//!    evicted between their arrival and their use would be fetched again,
//!    possibly forever under memory pressure.
//! 6. **Planned blocks already cached or in flight are skipped.** The
//!    planner does not see the cache: a second handle on a cached object, or
//!    a seek back into a region being fetched, gets plans for blocks that are
//!    there already. Each planned range is trimmed to its runs of missing
//!    blocks, one GET per run, so no byte is fetched twice while it is
//!    cached or in flight. Probing the cache is a `get`, so cache hit/miss
//!    counters include these probes.
//! 7. **Demand fetches (the planner contract).** A block of the read that is
//!    neither cached, nor in flight, nor in the plan (evicted since it was
//!    planned, or its fetch failed) is fetched now, in runs of at most
//!    `part_size`.
//! 8. **Whose failure is it.** A read fails with the error of a fetch it
//!    started itself. When a fetch it merely waited on fails (a background
//!    prefetch, or another read's GET) with anything but a pinning error,
//!    the block is resolved again (usually a demand fetch of its own), up to
//!    [`MAX_ROUNDS`] times: a failed prefetch must not fail an unrelated
//!    read that would succeed on retry. The store's own retries happen
//!    inside each GET; these rounds are only about sharing fetches.
//! 9. **Prefetch is not awaited.** Runs that hold no block of the read are
//!    started and left running; their failure only calls
//!    [`Readahead::forget`] so the range is planned again. Every failed
//!    fetch does the same, so a later read retries it.
//! 10. **Exact cache bound.** Each block arrives in its own buffer
//!     ([`ObjectStore::get_object_blocks`]; the HTTP store fills them
//!     straight from the connection): a slice of a part-sized body would
//!     keep the whole part alive (block.rs, subtle case 6), so memory stays
//!     bounded by the configured capacity, not by part size times it.
//! 11. **Lock order.** The cache's lock is taken inside the reader's (cache
//!     probes while resolving a read) and never the other way round, so the
//!     two cannot deadlock. The reader's lock makes "probe the cache, else
//!     register the block as in flight" atomic, so two reads of one handle
//!     never fetch the same block at once.
//! 12. **One block size.** Blocks are keyed by index, so the reader must cut
//!     objects exactly as the shared cache does: the cache's block size
//!     overrides the one in the readahead configuration.
//! 13. **Closing does not cancel.** Dropping the reader leaves its fetches
//!     running (they hold the shared state); they land in the cache, where
//!     a re-open finds them. What is in flight is bounded by the window cap
//!     plus the reads being served.
//! 14. **Empty objects and EOF.** Reads at or past EOF, and every read of an
//!     empty object, send nothing (a ranged GET on an empty object is a 416).
//! 15. **The disk tier.** With `-o disk_cache`, a block of the read that
//!     memory lacks but the disk holds is not fetched: only the read's part
//!     of it is read from its file, so a 4 KiB random read costs 4 KiB of
//!     disk, not a 1 MiB block (nor an eviction from memory). A part that
//!     has left the disk since (evicted) sends the block round again, to a
//!     fetch. Fetches (readahead, demand) also ask the disk first and use
//!     its blocks when it has every one of the run (a run partly on disk is
//!     fetched whole: the blocks of one run were fetched, hence evicted,
//!     together); what a GET brings is written to disk in the background.

use crate::cache::block::{BlockCache, BlockKey, blocks_for};
use crate::cache::disk;
use crate::cache::readahead::{Readahead, ReadaheadConfig};
use crate::store::{GetRequest, ObjectStore, ServiceDetails, StoreError, StoreResult};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::watch;

/// Most times one read resolves a block whose borrowed fetch failed
/// (subtle case 8). Three: the first attempt, then normally one demand
/// fetch of its own; the third only helps when other reads keep starting
/// (and losing) fetches of the same block, and a bound keeps a persistent
/// outage from cycling.
pub const MAX_ROUNDS: u32 = 3;

/// What a fetch publishes: `None` while running, then its blocks in order
/// (the first one is [`InFlight::first_block`]) or its error.
type Outcome = Option<StoreResult<Arc<[Bytes]>>>;

/// The read side of one open file handle, pinned to one version of one
/// object. See the module docs. `read` takes `&self`: reads of one handle
/// may run concurrently (share the reader behind an `Arc`).
pub struct FileReader {
    shared: Arc<Shared>,
}

/// Everything a reader and its fetch tasks share.
struct Shared {
    store: Arc<dyn ObjectStore>,
    cache: Arc<BlockCache>,
    key: String,
    etag: String,
    size: u64,
    block_size: u64,
    /// Longest demand fetch, in blocks (subtle case 7).
    part_blocks: u64,
    state: Mutex<State>,
}

struct State {
    planner: Readahead,
    /// Block index -> the fetch that will deliver it. A block has at most
    /// one entry: a fetch is only started for blocks without one.
    inflight: HashMap<u64, InFlight>,
    /// Identifies fetches, so a finished fetch removes its own entries only.
    next_id: u64,
    /// The pinned version is gone (subtle case 2).
    stale: bool,
}

/// A running fetch, as a waiter sees it.
#[derive(Clone)]
struct InFlight {
    id: u64,
    first_block: u64,
    outcome: watch::Receiver<Outcome>,
}

/// Where one block of a read comes from.
enum Source {
    /// The whole block, from memory or a fetch.
    Ready(Bytes),
    /// The disk tier has the block: read the read's part of it there.
    OnDisk,
    /// The read's part of the block, read from the disk tier.
    Part(Bytes),
    Waiting {
        flight: InFlight,
        /// Started by this read: its failure is this read's error.
        own: bool,
    },
}

/// A fetch registered in the in-flight map and not yet spawned.
struct Pending {
    id: u64,
    blocks: Range<u64>,
    publish: watch::Sender<Outcome>,
}

impl FileReader {
    /// A reader of `size` bytes of `key`, pinned to `etag` (both as seen at
    /// open). The cache's block size overrides `config.block_size`
    /// (subtle case 12).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        cache: Arc<BlockCache>,
        key: String,
        etag: String,
        size: u64,
        config: ReadaheadConfig,
    ) -> FileReader {
        let block_size = cache.block_size();
        let planner = Readahead::new(
            ReadaheadConfig {
                block_size,
                ..config
            },
            size,
        );
        let part_blocks = (planner.config().part_size / block_size).max(1);
        FileReader {
            shared: Arc::new(Shared {
                store,
                cache,
                key,
                etag,
                size,
                block_size,
                part_blocks,
                state: Mutex::new(State {
                    planner,
                    inflight: HashMap::new(),
                    next_id: 0,
                    stale: false,
                }),
            }),
        }
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The pinned ETag.
    pub fn etag(&self) -> &str {
        &self.shared.etag
    }

    /// The pinned size: reads end there.
    pub fn size(&self) -> u64 {
        self.shared.size
    }

    /// Whether a fetch found the pinned version gone; every further read
    /// fails with [`StoreError::PreconditionFailed`].
    pub fn is_stale(&self) -> bool {
        self.shared.state.lock().stale
    }

    /// Exactly the bytes `offset .. min(offset + len, size)` of the pinned
    /// version (empty at or past EOF), or an error: `PreconditionFailed`
    /// when the object changed (ESTALE), else the error of the failed GET.
    ///
    /// Must run inside a Tokio runtime: fetches are spawned tasks.
    pub async fn read(&self, offset: u64, len: u32) -> StoreResult<Bytes> {
        let sh = &self.shared;
        let end = offset.saturating_add(u64::from(len)).min(sh.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let covering = blocks_for(offset..end, sh.size, sh.block_size);
        let mut sources: Vec<Option<Source>> = covering.clone().map(|_| None).collect();
        let pending = {
            let mut st = sh.state.lock();
            if st.stale {
                return Err(sh.stale_error("an earlier read found it changed"));
            }
            let plan = st.planner.plan(offset, u64::from(len));
            sh.resolve(&mut st, &covering, &plan.fetch, &mut sources)
        };
        sh.spawn(pending);

        let mut round = 1;
        loop {
            let mut missing = false;
            for (i, source) in sources.iter_mut().enumerate() {
                let index = covering.start + i as u64;
                if matches!(source, Some(Source::OnDisk)) {
                    // Gone from the disk since (evicted): resolved again,
                    // which fetches it (subtle case 15).
                    *source = sh
                        .read_disk_part(index, offset, end)
                        .await
                        .map(Source::Part);
                    missing |= source.is_none();
                    continue;
                }
                let Some(Source::Waiting { flight, own }) = source else {
                    continue;
                };
                match wait(flight, index).await {
                    Ok(block) => *source = Some(Source::Ready(block)),
                    Err(e)
                        if *own
                            || round >= MAX_ROUNDS
                            || matches!(e, StoreError::PreconditionFailed(_)) =>
                    {
                        return Err(e);
                    }
                    // Someone else's fetch failed: resolve the block again
                    // (subtle case 8).
                    Err(_) => {
                        *source = None;
                        missing = true;
                    }
                }
            }
            if !missing {
                break;
            }
            round += 1;
            let pending = {
                let mut st = sh.state.lock();
                if st.stale {
                    return Err(sh.stale_error("an earlier read found it changed"));
                }
                sh.resolve(&mut st, &covering, &[], &mut sources)
            };
            sh.spawn(pending);
        }

        sh.assemble(offset, end, covering, sources)
    }
}

/// The block `index` of `flight`, once the fetch has finished.
async fn wait(flight: &mut InFlight, index: u64) -> StoreResult<Bytes> {
    let at = (index - flight.first_block) as usize;
    match flight.outcome.wait_for(Option::is_some).await {
        // Clone out at once: the `Ref` holds the channel's read lock.
        Ok(outcome) => match outcome.as_ref() {
            Some(Ok(blocks)) => Ok(blocks[at].clone()),
            Some(Err(e)) => Err(e.clone()),
            None => unreachable!("wait_for returned a value it rejects"),
        },
        // The drop guard always publishes; this is only a fallback.
        Err(_) => Err(cancelled()),
    }
}

fn cancelled() -> StoreError {
    StoreError::Transport("block fetch ended without a result".into())
}

/// Whether a response's ETag names the pinned version. ETags are opaque,
/// but a quoted or upper-case spelling names the same one; an absent one
/// is trusted to `If-Match` (subtle case 1).
fn same_etag(got: &str, pinned: &str) -> bool {
    let got = got.trim().trim_matches('"');
    got.is_empty() || got.eq_ignore_ascii_case(pinned.trim().trim_matches('"'))
}

impl Shared {
    fn block_key(&self, index: u64) -> BlockKey {
        BlockKey::new(self.key.as_str(), self.etag.as_str(), index)
    }

    /// Bytes held by `blocks`, clipped to the object.
    fn byte_range(&self, blocks: &Range<u64>) -> Range<u64> {
        blocks.start * self.block_size..blocks.end.saturating_mul(self.block_size).min(self.size)
    }

    /// Length of block `index` (the last one may be short).
    fn block_len(&self, index: u64) -> u64 {
        let span = self.byte_range(&(index..index + 1));
        span.end - span.start
    }

    fn stale_error(&self, why: &str) -> StoreError {
        StoreError::PreconditionFailed(ServiceDetails {
            status: 412,
            code: "PreconditionFailed".into(),
            message: format!(
                "{:?} no longer has ETag {} and size {}: {why}",
                self.key, self.etag, self.size
            ),
            request_id: String::new(),
        })
    }

    /// Fills the unresolved `sources` of the read's `covering` blocks from
    /// the in-flight map and the cache, registers fetches for the `plan`'s
    /// missing blocks (subtle case 6) and then for any block still
    /// unresolved (subtle case 7). Returns the fetches to spawn.
    fn resolve(
        &self,
        st: &mut State,
        covering: &Range<u64>,
        plan: &[Range<u64>],
        sources: &mut [Option<Source>],
    ) -> Vec<Pending> {
        for (i, source) in sources.iter_mut().enumerate() {
            if source.is_some() {
                continue;
            }
            let index = covering.start + i as u64;
            *source = if let Some(flight) = st.inflight.get(&index) {
                Some(Source::Waiting {
                    flight: flight.clone(),
                    own: false,
                })
            } else if let Some(block) = self.cache.get(&self.block_key(index)) {
                Some(Source::Ready(block))
            } else {
                self.on_disk(index).then_some(Source::OnDisk)
            };
        }

        let mut pending = Vec::new();
        let missing = |st: &State, sources: &[Option<Source>], index: u64| {
            if covering.contains(&index) {
                sources[(index - covering.start) as usize].is_none()
            } else {
                !st.inflight.contains_key(&index)
                    && self.cache.get(&self.block_key(index)).is_none()
            }
        };
        for range in plan {
            let blocks = range.start / self.block_size..range.end.div_ceil(self.block_size);
            let mut run: Option<u64> = None;
            for index in blocks.clone() {
                if missing(st, sources, index) {
                    run.get_or_insert(index);
                } else if let Some(start) = run.take() {
                    pending.push(self.register(st, start..index, covering, sources));
                }
            }
            if let Some(start) = run {
                pending.push(self.register(st, start..blocks.end, covering, sources));
            }
        }

        // Demand fetches for what the plan did not cover.
        let mut i = 0;
        while i < sources.len() {
            if sources[i].is_some() {
                i += 1;
                continue;
            }
            let start = i;
            while i < sources.len()
                && sources[i].is_none()
                && (i - start) < self.part_blocks as usize
            {
                i += 1;
            }
            let blocks = covering.start + start as u64..covering.start + i as u64;
            pending.push(self.register(st, blocks, covering, sources));
        }
        pending
    }

    /// Registers a fetch of `blocks` in the in-flight map; the read's own
    /// blocks among them wait on it as `own`.
    fn register(
        &self,
        st: &mut State,
        blocks: Range<u64>,
        covering: &Range<u64>,
        sources: &mut [Option<Source>],
    ) -> Pending {
        let id = st.next_id;
        st.next_id += 1;
        let (publish, outcome) = watch::channel(None);
        let flight = InFlight {
            id,
            first_block: blocks.start,
            outcome,
        };
        for index in blocks.clone() {
            debug_assert!(
                !st.inflight.contains_key(&index),
                "block {index} fetched twice"
            );
            st.inflight.insert(index, flight.clone());
            if covering.contains(&index) {
                sources[(index - covering.start) as usize] = Some(Source::Waiting {
                    flight: flight.clone(),
                    own: true,
                });
            }
        }
        Pending {
            id,
            blocks,
            publish,
        }
    }

    /// Starts the registered fetches, each in a detached task (subtle case 4).
    fn spawn(self: &Arc<Self>, pending: Vec<Pending>) {
        for p in pending {
            let mut task = FetchTask {
                shared: self.clone(),
                id: p.id,
                blocks: p.blocks,
                publish: p.publish,
                done: false,
            };
            tokio::spawn(async move {
                let result = task.shared.fetch(&task.blocks).await;
                task.finish(result);
            });
        }
    }

    /// The disk tier's copy of `blocks`, when it has all of them, else one
    /// pinned ranged GET of `blocks`, validated and cut into blocks that own
    /// their memory (subtle cases 1, 10 and 15).
    async fn fetch(&self, blocks: &Range<u64>) -> StoreResult<Arc<[Bytes]>> {
        // Held until the blocks are returned (block.rs, subtle case 8).
        let _budget = self.cache.reserve_fetch(blocks.end - blocks.start).await;
        if let Some(disk) = self.cache.disk() {
            let keys = blocks
                .clone()
                .map(|index| (self.block_key(index), self.block_len(index)))
                .collect();
            if let Some(found) = disk::read_run(disk, keys).await {
                return Ok(found.into());
            }
        }
        let range = self.byte_range(blocks);
        let req = GetRequest {
            key: self.key.clone(),
            range: Some(range.clone()),
            if_match: Some(self.etag.clone()),
        };
        let resp = match self
            .store
            .get_object_blocks(&req, self.block_size as usize)
            .await
        {
            Ok(resp) => resp,
            Err(StoreError::NoSuchKey { .. }) => {
                return Err(self.stale_error("the object was deleted"));
            }
            Err(StoreError::InvalidRange(d)) => {
                return Err(self.stale_error(&format!("range {range:?} refused ({d})")));
            }
            Err(e) => return Err(e),
        };
        if !same_etag(&resp.etag, &self.etag) || resp.total_size != self.size {
            return Err(self.stale_error(&format!(
                "a GET returned ETag {} and size {}",
                resp.etag, resp.total_size
            )));
        }
        let received: u64 = resp.blocks.iter().map(|b| b.len() as u64).sum();
        if resp.range != range || received != range.end - range.start {
            return Err(StoreError::InvalidResponse(format!(
                "asked {:?} for bytes {range:?}, got {:?} ({received} bytes)",
                self.key, resp.range,
            )));
        }
        if let Some(disk) = self.cache.disk() {
            let copies = blocks
                .clone()
                .zip(&resp.blocks)
                .map(|(index, block)| (self.block_key(index), block.clone()))
                .collect();
            disk::write_later(disk, copies).await;
        }
        let blocks: Arc<[Bytes]> = resp.blocks.into();
        Ok(blocks)
    }

    /// Whether the disk tier holds block `index` (subtle case 15).
    fn on_disk(&self, index: u64) -> bool {
        self.cache
            .disk()
            .is_some_and(|disk| disk.contains(&self.block_key(index), self.block_len(index)))
    }

    /// The part of block `index` within `offset..end`, from the disk tier.
    async fn read_disk_part(&self, index: u64, offset: u64, end: u64) -> Option<Bytes> {
        let disk = self.cache.disk()?;
        let span = self.byte_range(&(index..index + 1));
        let part = offset.max(span.start) - span.start..end.min(span.end) - span.start;
        disk::read_part(disk, self.block_key(index), span.end - span.start, part).await
    }

    /// The read's bytes out of its covering blocks (or of their parts read
    /// from disk), checking each has the length the object's layout gives
    /// it (another length would be a bug; better an error than wrong bytes
    /// or a panic).
    fn assemble(
        &self,
        offset: u64,
        end: u64,
        covering: Range<u64>,
        sources: Vec<Option<Source>>,
    ) -> StoreResult<Bytes> {
        let mut out: Option<BytesMut> = None;
        let mut single: Option<Bytes> = None;
        for (index, source) in covering.clone().zip(sources) {
            let span = self.byte_range(&(index..index + 1));
            let from = (offset.max(span.start) - span.start) as usize;
            let to = (end.min(span.end) - span.start) as usize;
            let wrong = |got: usize, expected: u64| {
                StoreError::Integrity(format!(
                    "block {index} of {:?} has {got} bytes, expected {expected}",
                    self.key
                ))
            };
            let part = match source {
                Some(Source::Ready(block)) => {
                    if block.len() as u64 != span.end - span.start {
                        return Err(wrong(block.len(), span.end - span.start));
                    }
                    block.slice(from..to)
                }
                // Already cut to the read.
                Some(Source::Part(part)) => {
                    if part.len() != to - from {
                        return Err(wrong(part.len(), (to - from) as u64));
                    }
                    part
                }
                _ => unreachable!("every block is ready once the loop ends"),
            };
            if covering.end - covering.start == 1 {
                // One block: hand out a view of it, no copy.
                single = Some(part);
            } else {
                out.get_or_insert_with(|| BytesMut::with_capacity((end - offset) as usize))
                    .extend_from_slice(&part);
            }
        }
        let bytes = match single {
            Some(b) => b,
            None => out.map(BytesMut::freeze).unwrap_or_default(),
        };
        debug_assert_eq!(bytes.len() as u64, end - offset);
        Ok(bytes)
    }
}

/// A spawned fetch. Finishing it (or dropping it unfinished) lands its
/// blocks, clears its in-flight entries and publishes the outcome.
struct FetchTask {
    shared: Arc<Shared>,
    id: u64,
    blocks: Range<u64>,
    publish: watch::Sender<Outcome>,
    done: bool,
}

impl FetchTask {
    fn finish(&mut self, result: StoreResult<Arc<[Bytes]>>) {
        self.done = true;
        let sh = &*self.shared;
        if let Ok(blocks) = &result {
            // Before the in-flight entries go: a read that finds neither an
            // entry nor a cached block would fetch again.
            for (index, block) in self.blocks.clone().zip(blocks.iter()) {
                sh.cache.insert(sh.block_key(index), block.clone());
            }
        }
        {
            let mut st = sh.state.lock();
            for index in self.blocks.clone() {
                if st.inflight.get(&index).is_some_and(|f| f.id == self.id) {
                    st.inflight.remove(&index);
                }
            }
            if let Err(e) = &result {
                st.planner.forget(sh.byte_range(&self.blocks));
                if matches!(e, StoreError::PreconditionFailed(_)) {
                    st.stale = true;
                }
            }
        }
        // `send_replace` stores the outcome even when nobody waits.
        self.publish.send_replace(Some(result));
    }
}

impl Drop for FetchTask {
    /// The task was cancelled or panicked: waiters get an error rather
    /// than hang, and the range is planned again (subtle case 4).
    fn drop(&mut self) {
        if !self.done {
            self.finish(Err(cancelled()));
        }
    }
}

impl fmt::Debug for FileReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sh = &*self.shared;
        f.debug_struct("FileReader")
            .field("key", &sh.key)
            .field("etag", &sh.etag)
            .field("size", &sh.size)
            .field("block_size", &sh.block_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::*;
    use async_trait::async_trait;
    use std::time::{Duration, Instant};
    use tokio::sync::Semaphore;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    /// Small sizes keep a 20 MiB object many blocks and parts long while the
    /// tests stay fast.
    const BS: u64 = 16 * KIB;

    fn config() -> ReadaheadConfig {
        ReadaheadConfig {
            block_size: BS,
            initial_window: 2 * BS,
            max_window: 16 * BS,
            part_size: 4 * BS,
            seek_tolerance: 2 * BS,
        }
    }

    fn no_readahead() -> ReadaheadConfig {
        ReadaheadConfig {
            initial_window: 0,
            max_window: 0,
            ..config()
        }
    }

    fn data(len: u64, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    /// Wraps a [`MemoryStore`]: records the range of every successful GET,
    /// and can fail or hold the next GET starting at a given offset, ignore
    /// `If-Match` (as some servers do) or report a forged ETag.
    #[derive(Debug)]
    struct TestStore {
        inner: MemoryStore,
        got: Mutex<Vec<Range<u64>>>,
        fail_at: Mutex<Option<(u64, StoreError)>>,
        hold_at: Mutex<Option<(u64, Arc<Semaphore>)>>,
        held: std::sync::atomic::AtomicU64,
        ignore_if_match: std::sync::atomic::AtomicBool,
        forge_etag: Mutex<Option<String>>,
    }

    impl TestStore {
        fn new() -> Arc<TestStore> {
            Arc::new(TestStore {
                inner: MemoryStore::new(Dialect::new(Provider::S3), "b"),
                got: Mutex::new(Vec::new()),
                fail_at: Mutex::new(None),
                hold_at: Mutex::new(None),
                held: Default::default(),
                ignore_if_match: Default::default(),
                forge_etag: Mutex::new(None),
            })
        }

        /// Stores `body` as `key`; returns its ETag.
        async fn put(&self, key: &str, body: &[u8]) -> String {
            let req = PutRequest {
                key: key.into(),
                body: Bytes::copy_from_slice(body),
                attributes: ObjectAttributes::default(),
            };
            self.inner.put_object(&req).await.unwrap().etag
        }

        fn gets(&self) -> u64 {
            self.inner.calls(Operation::GetObject)
        }

        fn bytes_got(&self) -> u64 {
            self.got.lock().iter().map(|r| r.end - r.start).sum()
        }

        /// The next GET starting at `start` waits for a permit of the
        /// returned semaphore.
        fn hold(&self, start: u64) -> Arc<Semaphore> {
            let gate = Arc::new(Semaphore::new(0));
            *self.hold_at.lock() = Some((start, gate.clone()));
            gate
        }
    }

    #[async_trait]
    impl ObjectStore for TestStore {
        fn dialect(&self) -> &Dialect {
            self.inner.dialect()
        }
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        async fn head_bucket(&self) -> StoreResult<BucketInfo> {
            self.inner.head_bucket().await
        }
        async fn list_objects(&self, req: &ListRequest) -> StoreResult<ListPage> {
            self.inner.list_objects(req).await
        }
        async fn head_object(&self, key: &str) -> StoreResult<ObjectMeta> {
            self.inner.head_object(key).await
        }
        async fn get_object(&self, req: &GetRequest) -> StoreResult<GetResponse> {
            let start = req.range.as_ref().map_or(0, |r| r.start);
            let gate = {
                let mut hold = self.hold_at.lock();
                match hold.take() {
                    Some((at, gate)) if at == start => Some(gate),
                    other => {
                        *hold = other;
                        None
                    }
                }
            };
            if let Some(gate) = gate {
                self.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
            }
            let fail = {
                let mut fail = self.fail_at.lock();
                match fail.take() {
                    Some((at, err)) if at == start => Some(err),
                    other => {
                        *fail = other;
                        None
                    }
                }
            };
            if let Some(err) = fail {
                return Err(err);
            }
            let mut req = req.clone();
            if self
                .ignore_if_match
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                req.if_match = None;
            }
            let mut resp = self.inner.get_object(&req).await?;
            if let Some(etag) = self.forge_etag.lock().clone() {
                resp.etag = etag;
            }
            self.got.lock().push(resp.range.clone());
            Ok(resp)
        }
        async fn put_object(&self, req: &PutRequest) -> StoreResult<PutResponse> {
            self.inner.put_object(req).await
        }
        async fn append_object(&self, req: &AppendRequest) -> StoreResult<AppendResponse> {
            self.inner.append_object(req).await
        }
        async fn create_multipart_upload(
            &self,
            key: &str,
            attributes: &ObjectAttributes,
        ) -> StoreResult<String> {
            self.inner.create_multipart_upload(key, attributes).await
        }
        async fn upload_part(&self, req: &UploadPartRequest) -> StoreResult<CompletedPart> {
            self.inner.upload_part(req).await
        }
        async fn upload_part_copy(
            &self,
            req: &UploadPartCopyRequest,
        ) -> StoreResult<CompletedPart> {
            self.inner.upload_part_copy(req).await
        }
        async fn complete_multipart_upload(
            &self,
            req: &CompleteMultipartRequest,
        ) -> StoreResult<PutResponse> {
            self.inner.complete_multipart_upload(req).await
        }
        async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> StoreResult<()> {
            self.inner.abort_multipart_upload(key, upload_id).await
        }
        async fn list_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<PartSummary>> {
            self.inner.list_parts(key, upload_id).await
        }
        async fn list_multipart_uploads(
            &self,
            prefix: &str,
            marker: Option<&(String, String)>,
        ) -> StoreResult<UploadPage> {
            self.inner.list_multipart_uploads(prefix, marker).await
        }
        async fn copy_object(&self, req: &CopyRequest) -> StoreResult<PutResponse> {
            self.inner.copy_object(req).await
        }
        async fn delete_object(&self, key: &str) -> StoreResult<()> {
            self.inner.delete_object(key).await
        }
        async fn delete_objects(&self, keys: &[String]) -> StoreResult<DeleteObjectsResult> {
            self.inner.delete_objects(keys).await
        }
        async fn rename_object(&self, source_key: &str, dest_key: &str) -> StoreResult<()> {
            self.inner.rename_object(source_key, dest_key).await
        }
        async fn modify_object(&self, key: &str, position: u64, body: Bytes) -> StoreResult<()> {
            self.inner.modify_object(key, position, body).await
        }
        async fn truncate_object(&self, key: &str, length: u64) -> StoreResult<()> {
            self.inner.truncate_object(key, length).await
        }
        async fn put_symlink(
            &self,
            key: &str,
            target: &str,
            attributes: &ObjectAttributes,
        ) -> StoreResult<()> {
            self.inner.put_symlink(key, target, attributes).await
        }
        async fn get_symlink(&self, key: &str) -> StoreResult<String> {
            self.inner.get_symlink(key).await
        }
    }

    fn reader(
        store: &Arc<TestStore>,
        cache: &Arc<BlockCache>,
        key: &str,
        etag: &str,
        size: u64,
        config: ReadaheadConfig,
    ) -> FileReader {
        FileReader::new(
            store.clone(),
            cache.clone(),
            key.into(),
            etag.into(),
            size,
            config,
        )
    }

    fn big_cache() -> Arc<BlockCache> {
        Arc::new(BlockCache::new(64 * MIB, BS))
    }

    /// Reads the whole object front to back in reads cycling through
    /// `sizes`, checking each reply against `want`.
    async fn scan(r: &FileReader, want: &[u8], sizes: &[u32]) -> u64 {
        let (mut offset, mut reads) = (0u64, 0u64);
        for &len in sizes.iter().cycle() {
            let got = r.read(offset, len).await.unwrap();
            let end = (offset + u64::from(len)).min(want.len() as u64);
            assert_eq!(
                &got[..],
                &want[offset as usize..end as usize],
                "read {offset}+{len}"
            );
            reads += 1;
            offset = end;
            if offset == want.len() as u64 {
                break;
            }
        }
        reads
    }

    /// Polls `cond` (yielding to the spawned tasks) until it holds; fails
    /// after a deadline rather than sleeping a guessed time.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::task::yield_now().await;
        }
    }

    const ASSORTED: &[u32] = &[
        1,
        100,
        4096,
        BS as u32 - 1,
        BS as u32,
        BS as u32 + 1,
        3 * BS as u32 + 7,
        128 * KIB as u32,
        13,
    ];

    #[tokio::test]
    async fn sequential_reads_return_exact_bytes_for_edge_sizes() {
        for size in [0, 1, BS - 1, BS, BS + 1, 20 * MIB + 5] {
            let store = TestStore::new();
            let body = data(size, size);
            let etag = store.put("f", &body).await;
            let cache = big_cache();
            let r = reader(&store, &cache, "f", &etag, size, config());
            if size > 0 {
                scan(&r, &body, ASSORTED).await;
            }
            // At and past EOF: empty, and no request for it.
            let gets = store.gets();
            assert!(r.read(size, 10).await.unwrap().is_empty());
            assert!(r.read(size + 5 * MIB, 1).await.unwrap().is_empty());
            assert!(r.read(u64::MAX, u32::MAX).await.unwrap().is_empty());
            assert!(r.read(0, 0).await.unwrap().is_empty());
            assert_eq!(store.gets(), gets, "size {size}");
            if size == 0 {
                assert_eq!(gets, 0, "an empty object needs no GET");
                continue;
            }
            // Straddling EOF: clipped.
            let tail = r.read(size - 1, 100).await.unwrap();
            assert_eq!(&tail[..], &body[size as usize - 1..]);
            // Everything was fetched exactly once: the cache holds it all.
            let mut got = store.got.lock().clone();
            got.sort_by_key(|g| g.start);
            assert!(got.windows(2).all(|w| w[0].end <= w[1].start), "{got:?}");
            assert_eq!(store.bytes_got(), size, "size {size}");
        }
    }

    #[tokio::test]
    async fn random_reads_are_exact_even_with_a_tiny_cache() {
        let size = 3 * MIB + 777;
        let store = TestStore::new();
        let body = data(size, 1);
        let etag = store.put("f", &body).await;
        // Three blocks of cache, windows of up to sixteen: prefetched blocks
        // are evicted before use and must be fetched again on demand.
        for cache in [big_cache(), Arc::new(BlockCache::new(3 * BS, BS))] {
            let r = reader(&store, &cache, "f", &etag, size, config());
            let mut rng = fastrand::Rng::with_seed(42);
            for _ in 0..300 {
                let offset = rng.u64(..size + 1000);
                let len = rng.u32(..(5 * BS) as u32);
                let got = r.read(offset, len).await.unwrap();
                let (a, b) = (offset.min(size), (offset + u64::from(len)).min(size));
                assert_eq!(&got[..], &body[a as usize..b as usize], "{offset}+{len}");
            }
            // A scan in small reads with readahead through a tiny cache.
            let r = reader(&store, &cache, "f", &etag, size, config());
            scan(&r, &body, &[1000, 5000]).await;
            assert!(cache.stats().bytes <= cache.capacity());
        }
    }

    #[tokio::test]
    async fn a_second_reader_is_served_from_the_cache() {
        let size = 2 * MIB + 3;
        let store = TestStore::new();
        let body = data(size, 2);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        let first = reader(&store, &cache, "f", &etag, size, config());
        scan(&first, &body, &[64 * KIB as u32]).await;
        let gets = store.gets();
        assert!(gets > 0);
        let hits = cache.stats().hits;

        let second = reader(&store, &cache, "f", &etag, size, config());
        scan(&second, &body, &[50_000, 7]).await;
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50 {
            let offset = rng.u64(..size);
            let got = second.read(offset, 9000).await.unwrap();
            let end = (offset + 9000).min(size);
            assert_eq!(&got[..], &body[offset as usize..end as usize]);
        }
        assert_eq!(store.gets(), gets, "the second reader sent GETs");
        assert!(cache.stats().hits > hits);
    }

    #[tokio::test]
    async fn sequential_scan_reads_ahead_and_fetches_each_byte_once() {
        let size = 20 * MIB;
        let store = TestStore::new();
        let body = data(size, 4);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        let config = ReadaheadConfig {
            part_size: 16 * BS,
            max_window: 64 * BS,
            ..config()
        };
        let r = reader(&store, &cache, "f", &etag, size, config);
        let reads = scan(&r, &body, &[BS as u32]).await;
        assert_eq!(reads, size / BS);
        let gets = store.gets();
        // Parts of 16 blocks once the window has grown: about 80 GETs for
        // 1280 reads. Without readahead it would be one GET per read.
        assert!(gets * 8 <= reads, "{gets} GETs for {reads} reads");
        assert_eq!(store.bytes_got(), size, "some bytes were fetched twice");
    }

    #[tokio::test]
    async fn concurrent_reads_of_one_block_share_one_fetch() {
        let store = TestStore::new();
        let body = data(4 * BS, 5);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        let r = reader(&store, &cache, "f", &etag, 4 * BS, no_readahead());
        // On this single-threaded runtime each read registers (or finds)
        // the fetch of block 1 before any GET runs: without the in-flight
        // map the later three would each fetch it again.
        let (a, b, c, d) = tokio::join!(
            r.read(BS, 100),
            r.read(BS + 50, 200),
            r.read(BS, 100),
            r.read(2 * BS - 10, 10)
        );
        assert_eq!(&a.unwrap()[..], &body[BS as usize..BS as usize + 100]);
        assert_eq!(&b.unwrap()[..], &body[BS as usize + 50..BS as usize + 250]);
        assert_eq!(&c.unwrap()[..], &body[BS as usize..BS as usize + 100]);
        assert_eq!(
            &d.unwrap()[..],
            &body[2 * BS as usize - 10..2 * BS as usize]
        );
        assert_eq!(store.gets(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_readers_get_correct_bytes() {
        let size = 4 * MIB + 321;
        let store = TestStore::new();
        let body = Arc::new(data(size, 6));
        let etag = store.put("f", &body).await;
        let cache = Arc::new(BlockCache::new(40 * BS, BS));
        let readers = [
            Arc::new(reader(&store, &cache, "f", &etag, size, config())),
            Arc::new(reader(&store, &cache, "f", &etag, size, config())),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16u64 {
            let r = readers[(t % 2) as usize].clone();
            let body = body.clone();
            tasks.spawn(async move {
                let mut rng = fastrand::Rng::with_seed(t);
                // Half the tasks stream, half read at random.
                let mut offset = rng.u64(..size);
                for _ in 0..60 {
                    if t % 4 < 2 {
                        offset = rng.u64(..size);
                    }
                    let len = rng.u32(1..(3 * BS) as u32);
                    let got = r.read(offset, len).await.unwrap();
                    let end = (offset + u64::from(len)).min(size);
                    assert_eq!(&got[..], &body[offset as usize..end as usize]);
                    offset = if end == size { 0 } else { end };
                }
            });
        }
        // Plus several reads joined on one reader.
        let r = &readers[0];
        let (a, b, c) = tokio::join!(r.read(0, 70_000), r.read(10, 70_000), r.read(size - 5, 10));
        assert_eq!(&a.unwrap()[..], &body[..70_000]);
        assert_eq!(&b.unwrap()[..], &body[10..70_010]);
        assert_eq!(&c.unwrap()[..], &body[size as usize - 5..]);
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert!(cache.stats().bytes <= cache.capacity());
    }

    #[tokio::test]
    async fn a_replaced_object_fails_with_precondition_and_never_mixes() {
        let size = 8 * BS;
        let store = TestStore::new();
        let old = data(size, 7);
        let etag = store.put("f", &old).await;
        let cache = big_cache();
        let r = reader(&store, &cache, "f", &etag, size, no_readahead());
        assert_eq!(
            &r.read(0, BS as u32).await.unwrap()[..],
            &old[..BS as usize]
        );

        // Another client replaces the object (same size, new bytes).
        store.put("f", &data(size, 8)).await;
        // Half cached old block 0, half uncached block 1: never glued.
        let err = r.read(BS / 2, BS as u32).await.unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
        assert_eq!(crate::errno::errno(&err), libc::ESTALE);
        assert!(r.is_stale());
        // Sticky: even the cached block is refused now, without a GET.
        let gets = store.gets();
        let again = r.read(0, 10).await.unwrap_err();
        assert!(matches!(again, StoreError::PreconditionFailed(_)));
        assert_eq!(store.gets(), gets);

        // A fresh handle on the new version reads the new bytes; the old
        // version's cached block is not served to it.
        let new = store.inner.object_bytes("f").unwrap();
        let new_etag = store.inner.head_object("f").await.unwrap().etag;
        let fresh = reader(&store, &cache, "f", &new_etag, size, config());
        assert_eq!(&fresh.read(0, 100).await.unwrap()[..], &new[..100]);

        // Deleted under an open handle: stale too.
        let r = reader(&store, &cache, "f", &new_etag, size, no_readahead());
        store.inner.delete_object("f").await.unwrap();
        let err = r.read(5 * BS, 10).await.unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn responses_are_checked_even_when_the_server_ignores_if_match() {
        let size = 8 * BS;
        let store = TestStore::new();
        let old = data(size, 9);
        let etag = store.put("f", &old).await;
        let cache = Arc::new(BlockCache::new(BS, BS)); // holds one block
        store
            .ignore_if_match
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let r = reader(&store, &cache, "f", &etag, size, no_readahead());
        assert_eq!(&r.read(0, 100).await.unwrap()[..], &old[..100]);

        store.put("f", &data(size, 10)).await;
        let err = r.read(3 * BS, 100).await.unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");

        // Same ETag reported (a broken proxy), other size: still refused.
        let longer = data(size + 1, 11);
        store.put("g", &longer).await;
        *store.forge_etag.lock() = Some("pinned".into());
        let r = reader(&store, &cache, "g", "pinned", size, no_readahead());
        let err = r.read(0, 100).await.unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
        // The control: an honest response with the forged ETag is accepted.
        let r = reader(&store, &cache, "g", "pinned", size + 1, no_readahead());
        assert_eq!(&r.read(0, 100).await.unwrap()[..], &longer[..100]);
    }

    #[tokio::test]
    async fn an_injected_failure_surfaces_and_the_next_read_succeeds() {
        let size = 4 * BS;
        let store = TestStore::new();
        let body = data(size, 12);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        // No readahead: the read's one GET is the one that fails.
        let r = reader(&store, &cache, "f", &etag, size, no_readahead());
        let timeout = StoreError::Timeout("injected".into());
        store
            .inner
            .fail_next(Operation::GetObject, 1, timeout.clone());
        assert_eq!(r.read(BS, 100).await, Err(timeout));
        assert!(!r.is_stale());
        assert_eq!(store.gets(), 1);
        let got = r.read(BS, 100).await.unwrap();
        assert_eq!(&got[..], &body[BS as usize..BS as usize + 100]);
        assert_eq!(store.gets(), 2, "the failed block was fetched again");

        // With readahead: the read's GET and its prefetch both fail (two
        // GETs, whichever runs first); the failed ranges are forgotten and
        // re-planned, so a scan after the failure still sees every byte.
        let r = reader(&store, &big_cache(), "f", &etag, size, config());
        let reset = StoreError::Transport("reset".into());
        store
            .inner
            .fail_next(Operation::GetObject, 2, reset.clone());
        assert_eq!(r.read(0, 10).await, Err(reset));
        let gets = store.gets();
        scan(&r, &body, &[5000]).await;
        assert!(store.gets() > gets);
    }

    #[tokio::test]
    async fn prefetch_is_not_awaited_and_its_failure_is_retried_on_demand() {
        let size = 8 * BS;
        let store = TestStore::new();
        let body = data(size, 13);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        let config = ReadaheadConfig {
            initial_window: 4 * BS,
            ..config()
        };
        let r = reader(&store, &cache, "f", &etag, size, config);
        // The first read fetches block 0 and prefetches blocks 1..4 as one
        // GET starting at BS, which is held and then fails.
        let gate = store.hold(BS);
        *store.fail_at.lock() = Some((BS, StoreError::Timeout("injected".into())));
        // Returns while the prefetch is held: it is not awaited.
        let first = tokio::time::timeout(Duration::from_secs(10), r.read(0, 100))
            .await
            .expect("the read waited for its prefetch");
        assert_eq!(&first.unwrap()[..], &body[..100]);
        eventually("the prefetch GET to be held", || {
            store.held.load(std::sync::atomic::Ordering::SeqCst) == 1
        })
        .await;

        // This read's block is in the held prefetch: it waits on it, sees it
        // fail, and fetches the block itself.
        let (second, ()) = tokio::join!(r.read(BS, 100), async {
            tokio::task::yield_now().await;
            gate.add_permits(1);
        });
        assert_eq!(&second.unwrap()[..], &body[BS as usize..BS as usize + 100]);
        assert!(store.fail_at.lock().is_none(), "the prefetch did not fail");
        // The failed prefetch was forgotten: the planner's region was cut
        // back to where the lost range started.
        assert_eq!(r.shared.state.lock().planner.planned().end, BS);
        // The rest of the forgotten prefetch is fetched again when needed.
        scan(&r, &body, &[3000]).await;
        assert_eq!(store.bytes_got(), size);
    }

    #[tokio::test]
    async fn a_dropped_read_does_not_strand_its_fetch() {
        let store = TestStore::new();
        let body = data(2 * BS, 14);
        let etag = store.put("f", &body).await;
        let cache = big_cache();
        let r = reader(&store, &cache, "f", &etag, 2 * BS, no_readahead());
        let gate = store.hold(0);
        {
            // Poll the read until its GET is held, then drop it (as FUSE
            // drops an interrupted request).
            let read = r.read(0, 100);
            tokio::pin!(read);
            let held = async {
                eventually("the GET to start", || {
                    store.held.load(std::sync::atomic::Ordering::SeqCst) == 1
                })
                .await
            };
            tokio::select! {
                _ = &mut read => panic!("the read finished while its GET was held"),
                () = held => {}
            }
        }
        gate.add_permits(1);
        // The fetch went on: this read waits on it (or finds its block
        // cached) instead of sending another GET.
        let got = r.read(10, 100).await.unwrap();
        assert_eq!(&got[..], &body[10..110]);
        assert_eq!(store.gets(), 1);
        eventually("the block to be cached", || cache.stats().blocks == 1).await;
    }

    #[tokio::test]
    async fn cached_blocks_own_their_memory() {
        let size = 4 * BS;
        let store = TestStore::new();
        let etag = store.put("f", &data(size, 15)).await;
        let cache = big_cache();
        let r = reader(&store, &cache, "f", &etag, size, no_readahead());
        r.read(0, (3 * BS) as u32).await.unwrap();
        // MemoryStore answers with slices of the stored body: a cached block
        // pointing into it would pin the whole GET buffer (subtle case 10).
        let stored = store.inner.object_bytes("f").unwrap();
        let stored = stored.as_ptr() as usize..stored.as_ptr() as usize + stored.len();
        for index in 0..3 {
            let block = cache
                .get(&BlockKey::new("f", etag.as_str(), index))
                .unwrap();
            assert_eq!(block.len() as u64, BS);
            assert!(
                !stored.contains(&(block.as_ptr() as usize)),
                "block {index}"
            );
        }
    }

    #[test]
    fn read_futures_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store = TestStore::new();
        let r = reader(&store, &big_cache(), "f", "e", 10, config());
        let read = r.read(0, 1);
        assert_send(&read);
    }

    #[test]
    fn the_cache_block_size_wins() {
        let store = TestStore::new();
        let cache = Arc::new(BlockCache::new(MIB, 4 * KIB));
        let config = ReadaheadConfig {
            block_size: 64 * KIB,
            ..config()
        };
        let r = reader(&store, &cache, "f", "e", MIB, config);
        assert_eq!(r.shared.block_size, 4 * KIB);
        assert_eq!(r.shared.state.lock().planner.config().block_size, 4 * KIB);
    }

    /// A memory cache of two blocks over a disk tier: what left memory is
    /// read from disk, never fetched twice, and a random read takes only
    /// its own bytes from the block's file.
    #[tokio::test]
    async fn with_a_disk_tier_nothing_is_fetched_twice() {
        use crate::cache::disk::DiskCache;
        use std::fs;
        let size = 8 * BS + 123;
        let store = TestStore::new();
        let body = data(size, 11);
        let etag = store.put("f", &body).await;
        let dir = std::env::temp_dir().join(format!("bucketfs-reader-disk-{}", std::process::id()));
        let disk = Arc::new(DiskCache::open(&dir, 64 * MIB, 64 * MIB).unwrap());
        let cache = Arc::new(BlockCache::new(2 * BS, BS).with_disk(disk.clone()));

        let r = reader(&store, &cache, "f", &etag, size, config());
        scan(&r, &body, ASSORTED).await;
        eventually("every block on disk", || disk.stats().bytes == size).await;
        // A block may be fetched twice in this first pass: memory holds two
        // blocks, and one evicted before its disk write lands is fetched
        // again (disk.rs, subtle case 4). Once on disk, never.
        let (gets, bytes) = (store.gets(), store.bytes_got());
        assert!(bytes >= size, "the first pass fetches the file");

        // A second pass and random reads: from memory and disk only.
        let again = reader(&store, &cache, "f", &etag, size, config());
        scan(&again, &body, ASSORTED).await;
        let random = reader(&store, &cache, "f", &etag, size, no_readahead());
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..200 {
            let offset = rng.u64(..size);
            let len = rng.u32(1..3 * BS as u32);
            let end = (offset + u64::from(len)).min(size);
            let got = random.read(offset, len).await.unwrap();
            assert_eq!(&got[..], &body[offset as usize..end as usize]);
        }
        assert_eq!((store.gets(), store.bytes_got()), (gets, bytes));
        assert!(disk.stats().hits > 0);
        assert!(cache.stats().bytes <= cache.capacity());

        // A block that left the disk is fetched again, not failed.
        fs::remove_dir_all(disk.dir()).unwrap();
        fs::create_dir(disk.dir()).unwrap();
        let cold = reader(&store, &cache, "f", &etag, size, no_readahead());
        assert_eq!(
            &cold.read(3 * BS, 10).await.unwrap()[..],
            &body[3 * BS as usize..][..10]
        );
        assert!(store.gets() > gets);

        // Another version of the object is never served from the old
        // version's blocks.
        let new = data(size, 12);
        let new_etag = store.put("f", &new).await;
        let fresh = reader(&store, &cache, "f", &new_etag, size, no_readahead());
        assert_eq!(
            &fresh.read(BS, 100).await.unwrap()[..],
            &new[BS as usize..][..100]
        );
        drop(disk);
        drop(cache);
        let _ = fs::remove_dir_all(&dir);
    }
}
