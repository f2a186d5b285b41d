//! Per-handle readahead planning: which byte ranges to fetch for each read.
//!
//! [`Readahead`] is a pure state machine (no I/O, no clock, no async). For
//! every read the filesystem calls [`Readahead::plan`] and gets the ranges
//! to request now: block-aligned, clipped to the object, ascending, each at
//! most `part_size` long, to be fetched in parallel as ranged GETs whose
//! blocks land in the shared [`super::block::BlockCache`].
//!
//! # Model
//!
//! The planner remembers one contiguous, block-aligned *planned region*: the
//! bytes of the current stream already handed out for fetching and not yet
//! consumed. Its end is the high-water mark of the prefetched stream; its
//! start trails the reader by `seek_tolerance` (subtle case 9). A read is
//! either
//!
//! * **in the stream**: it starts within `seek_tolerance` of where the
//!   previous read ended (forward or backward), or anywhere inside the
//!   planned region ahead of the reader (subtle case 3). Only the blocks of
//!   the read that are not yet planned are fetched, and once the pattern is
//!   sequential ([`SEQUENTIAL_READS_FOR_READAHEAD`] reads in a row) the
//!   region is topped up so it stays about one window ahead of the reader;
//!   every top-up doubles the window, from `initial_window` up to
//!   `max_window`;
//! * **a seek** (anything else): the window goes back to `initial_window`,
//!   the old region is forgotten, and only the blocks covering the read are
//!   fetched. Readahead resumes when the next read continues this one.
//!
//! # Contract with the caller
//!
//! The planner assumes every range it returns is requested and its blocks
//! reach the block cache. It does not see the cache: a block it planned
//! earlier may have been evicted (or its fetch may have failed) by the time
//! the reader gets there, so the caller must still fetch on demand any block
//! of a read that is neither cached nor in flight. The plan is about
//! efficiency; that fallback is about correctness. When a planned range will
//! not arrive (failed or cancelled fetch), [`Readahead::forget`] lets it be
//! planned again. The object size is fixed for the handle's lifetime,
//! because reads are pinned to the ETag the handle opened.
//!
//! # Subtle cases
//!
//! 1. **First read of a handle.** There is no history, but opening a file
//!    and reading it front to back (`cat`, `cp`, `rsync`, `tar`) is by far
//!    the common case, so the first read fetches its covering blocks plus up
//!    to `initial_window` bytes from its offset: a small first request for a
//!    low time-to-first-byte, and at most `initial_window` wasted if the
//!    guess is wrong. A seek later fetches only the covering blocks (the
//!    handle has shown it is not a plain front-to-back reader).
//! 2. **Backward tolerance.** The kernel splits a large read into
//!    `max_read` requests and, with async reads, may deliver them slightly
//!    out of order; readers also peek back a little (headers, re-reads of a
//!    record boundary). Such reads stay in the stream. They usually fetch
//!    nothing (the bytes were planned), and never shrink the window.
//! 3. **Forward jumps inside the planned region** are in the stream even
//!    beyond `seek_tolerance`: those bytes are already requested, and
//!    treating the jump as a seek would forget the high-water mark and
//!    request them a second time.
//! 4. **Forward skip past the planned region** (within tolerance): the
//!    skipped gap is not fetched; the region restarts at the read's first
//!    block. Nobody asked for the gap, and the reader is past it.
//! 5. **Backward read before the region's start** (within tolerance, e.g.
//!    right after a seek): the covering blocks *and* the gap up to the
//!    region are fetched, keeping the region contiguous. The gap (at most
//!    `seek_tolerance` plus a block) lies between the reader and data it is
//!    about to read, so it is readahead, not waste.
//! 6. **Hysteresis.** The region is topped up only when the reader's lead
//!    drops below half a window, and then back to a full window. Topping up
//!    on every read would issue a one-block GET per 128 KiB FUSE read; with
//!    hysteresis every top-up is at least half a window (32 MiB, four
//!    parallel parts, at the default cap). Because the window doubles per
//!    top-up rather than per read, the bytes prefetched stay within a small
//!    factor of the bytes the reader actually consumed: a reader that stops
//!    early wastes little.
//! 7. **Needed bytes are never merged with readahead.** The ranges covering
//!    the read come first and are split separately from the prefetch ranges,
//!    so the reply waits for a GET of the read's own blocks, not for an
//!    8 MiB part that merely starts with them.
//! 8. **Even splitting.** A range longer than `part_size` is cut into the
//!    fewest parts of near-equal size (whole blocks), not into full parts
//!    plus a small tail: parallel GETs finish together.
//! 9. **Consumed bytes leave the region.** After each read the region's
//!    start is raised to the block `seek_tolerance` behind the read's end:
//!    bytes further back can only be reached by a seek, which plans afresh
//!    anyway. This keeps a late [`Readahead::forget`] of long-consumed bytes
//!    from cutting the live stream. `forget` of a lost range behind the
//!    reader raises the start past it (a backward read then re-fetches it
//!    through case 5); a lost range reaching ahead of the reader cuts the
//!    end back to it, so the next read re-plans from there.
//! 10. **EOF.** Reads at or past the end of the object, and empty reads,
//!     plan nothing and leave the state alone (`cat` ends with a read at
//!     EOF; it says nothing about the access pattern). Reads straddling EOF,
//!     and all readahead, are clipped to the object size; the last block may
//!     be short.
//! 11. **One pattern per handle.** Several readers interleaving on one handle
//!     (threads `pread`ing one fd at different offsets) look like seeks and
//!     get no readahead, only correct demand fetches; the same limitation as
//!     the kernel's per-file readahead state.

use super::block::blocks_for;
use std::ops::Range;

/// Default block size: the unit of the block cache. 1 MiB keeps the number
/// of cache entries small (1 GiB of cache = 1024 entries) while a random
/// 4 KiB read fetches at most 1 MiB, a few milliseconds at typical
/// object-store bandwidths, barely more than the request latency.
pub const DEFAULT_BLOCK_SIZE: u64 = 1 << 20;

/// Default first request: about 1 MiB arrives within one round trip plus a
/// few milliseconds, so the first byte reaches the reader quickly.
pub const DEFAULT_INITIAL_WINDOW: u64 = 1 << 20;

/// Default window cap. 64 MiB ahead is up to eight 8 MiB GETs in flight per
/// stream, enough to saturate a multi-gigabit link at object-store latencies
/// (~50 ms x 1.25 GB/s = 62.5 MB in flight), while a mount with tens of
/// concurrent streams still stays within a few GiB of prefetched data.
pub const DEFAULT_MAX_WINDOW: u64 = 64 << 20;

/// Default size of one ranged GET. 8 MiB amortises per-request latency and
/// cost (requests are billed) while keeping a window split into several
/// GETs that run in parallel; it is also the usual multipart part size.
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;

/// Default seek tolerance. 2 MiB covers the kernel reordering a few
/// `max_read` (128 KiB to 1 MiB) requests and small skips or peeks back,
/// while a jump to a different region of a large file still counts as a
/// seek.
pub const DEFAULT_SEEK_TOLERANCE: u64 = 2 << 20;

/// Reads in a row (the one that started the run included) that make the
/// pattern sequential. Two: one read continuing the previous one is the
/// earliest sign of a stream, and waiting longer delays readahead for
/// every small-read (4 KiB) reader after each seek.
pub const SEQUENTIAL_READS_FOR_READAHEAD: u32 = 2;

/// Tuning of a [`Readahead`]. All sizes are in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadaheadConfig {
    /// Unit of fetching and caching; must equal the block cache's.
    pub block_size: u64,
    /// Window at the start of a stream (and after a seek). 0 disables
    /// readahead: only the blocks covering each read are fetched.
    pub initial_window: u64,
    /// Largest window.
    pub max_window: u64,
    /// Longest range of one planned GET; rounded down to whole blocks.
    pub part_size: u64,
    /// Seeks of at most this many bytes, either way, keep the stream.
    pub seek_tolerance: u64,
}

impl Default for ReadaheadConfig {
    fn default() -> Self {
        ReadaheadConfig {
            block_size: DEFAULT_BLOCK_SIZE,
            initial_window: DEFAULT_INITIAL_WINDOW,
            max_window: DEFAULT_MAX_WINDOW,
            part_size: DEFAULT_PART_SIZE,
            seek_tolerance: DEFAULT_SEEK_TOLERANCE,
        }
    }
}

impl ReadaheadConfig {
    /// The configuration actually used: `block_size` at least 1,
    /// `part_size` a whole number of blocks (at least one), `max_window` at
    /// least `initial_window`. Values from a config file are repaired rather
    /// than rejected here; the mount layer may show the result.
    pub fn normalized(self) -> Self {
        let block_size = self.block_size.max(1);
        let part_size = (self.part_size / block_size).max(1) * block_size;
        ReadaheadConfig {
            block_size,
            part_size,
            max_window: self.max_window.max(self.initial_window),
            ..self
        }
    }
}

/// What to fetch for one read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ranges to request now, ascending and disjoint; each starts on a block
    /// boundary, ends on one or at the object's end, and is at most
    /// `part_size` long.
    pub fetch: Vec<Range<u64>>,
}

impl Plan {
    /// Nothing to fetch.
    pub fn is_empty(&self) -> bool {
        self.fetch.is_empty()
    }

    /// Total bytes to fetch.
    pub fn bytes(&self) -> u64 {
        self.fetch.iter().map(|r| r.end - r.start).sum()
    }
}

/// Readahead state of one open file handle. See the module docs.
#[derive(Clone, Debug)]
pub struct Readahead {
    config: ReadaheadConfig,
    object_size: u64,
    /// Current window; `initial_window ..= max_window`.
    window: u64,
    /// Planned region of the current stream (block-aligned start; end
    /// block-aligned or the object size). May be empty.
    planned: Range<u64>,
    /// End of the previous read, clipped to the object; `None` before the
    /// first read (or after `reset`).
    last_end: Option<u64>,
    /// Reads in the current run, the one that started it included.
    run: u32,
}

impl Readahead {
    /// Planner for a handle on an object of `object_size` bytes.
    pub fn new(config: ReadaheadConfig, object_size: u64) -> Self {
        let config = config.normalized();
        Readahead {
            config,
            object_size,
            window: config.initial_window,
            planned: 0..0,
            last_end: None,
            run: 0,
        }
    }

    /// The (normalized) configuration.
    pub fn config(&self) -> &ReadaheadConfig {
        &self.config
    }

    /// Size of the object this handle reads.
    pub fn object_size(&self) -> u64 {
        self.object_size
    }

    /// Current window size.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Byte range planned for the current stream; its end is the high-water
    /// mark of the prefetched stream.
    pub fn planned(&self) -> Range<u64> {
        self.planned.clone()
    }

    /// Ranges to fetch now for a read of `len` bytes at `offset`.
    pub fn plan(&mut self, offset: u64, len: u64) -> Plan {
        let mut plan = Plan::default();
        let size = self.object_size;
        let blocks = blocks_for(
            offset..offset.saturating_add(len),
            size,
            self.config.block_size,
        );
        if blocks.is_empty() {
            // Empty read, or at/after EOF (subtle case 10).
            return plan;
        }
        let bs = self.config.block_size;
        let end = offset.saturating_add(len).min(size);
        // Covering blocks as bytes: [cs, ce).
        let cs = blocks.start * bs;
        let ce = blocks.end.saturating_mul(bs).min(size);

        if !self.in_stream(offset) {
            let first = self.last_end.is_none();
            self.window = self.config.initial_window;
            self.run = 1;
            self.planned = cs..ce;
            self.push(&mut plan, cs..ce);
            if first {
                // Subtle case 1: a small first request past the read.
                let target = self.align_up(offset.saturating_add(self.window));
                if target > ce {
                    self.planned.end = target;
                    self.push(&mut plan, ce..target);
                }
            }
            self.finish_read(end);
            return plan;
        }

        self.run = self.run.saturating_add(1);
        if self.planned.is_empty() {
            // Everything was forgotten: restart the region at this read.
            self.planned = cs..cs;
        }
        // Bytes this read needs that are not planned yet (subtle cases 4, 5).
        let mut needed: Vec<Range<u64>> = Vec::new();
        if cs < self.planned.start {
            needed.push(cs..self.planned.start);
            self.planned.start = cs;
        }
        if ce > self.planned.end {
            if cs > self.planned.end {
                self.planned.start = cs;
                needed.push(cs..ce);
            } else {
                needed.push(self.planned.end..ce);
            }
            self.planned.end = ce;
        }
        // At most two ranges, both outside the (non-empty) region, so they
        // never touch: each is split on its own.
        for r in needed {
            self.push(&mut plan, r);
        }

        // Readahead top-up (subtle case 6).
        if self.run >= SEQUENTIAL_READS_FOR_READAHEAD && self.planned.end < size {
            let lead = self.planned.end - end;
            if lead < self.window - self.window / 2 {
                let target = self.align_up(end.saturating_add(self.window));
                if target > self.planned.end {
                    let from = self.planned.end;
                    self.planned.end = target;
                    self.push(&mut plan, from..target);
                    self.window = self.window.saturating_mul(2).min(self.config.max_window);
                }
            }
        }
        self.finish_read(end);
        plan
    }

    /// Tells the planner that the planned bytes in `range` will not arrive
    /// (their fetch failed or was cancelled), so later reads plan them
    /// again (subtle case 9). The region stays contiguous: a lost range
    /// ahead of the reader cuts the region back to the first lost block, so
    /// planned bytes after `range` may be requested a second time, which is
    /// harmless (the cache keeps one copy) and rare.
    pub fn forget(&mut self, range: Range<u64>) {
        if range.start >= range.end
            || range.end <= self.planned.start
            || range.start >= self.planned.end
        {
            return;
        }
        let behind_reader = self.last_end.is_some_and(|last| range.end <= last);
        if behind_reader {
            self.planned.start = self.align_up(range.end).min(self.planned.end);
        } else {
            self.planned.end = self.align_down(range.start).max(self.planned.start);
        }
    }

    /// Forgets everything: the next read is planned as the first one.
    pub fn reset(&mut self) {
        *self = Readahead::new(self.config, self.object_size);
    }

    /// Whether a read at `offset` continues the current stream.
    fn in_stream(&self, offset: u64) -> bool {
        let Some(last) = self.last_end else {
            return false;
        };
        let tol = self.config.seek_tolerance;
        offset.saturating_add(tol) >= last
            && offset <= last.saturating_add(tol).max(self.planned.end)
    }

    /// `offset` rounded down to a block boundary.
    fn align_down(&self, offset: u64) -> u64 {
        offset / self.config.block_size * self.config.block_size
    }

    /// Records the end of a read and drops consumed bytes from the region
    /// (subtle case 9).
    fn finish_read(&mut self, end: u64) {
        self.last_end = Some(end);
        let behind = self.align_down(end.saturating_sub(self.config.seek_tolerance));
        self.planned.start = self.planned.start.max(behind).min(self.planned.end);
    }

    /// `offset` rounded up to a block boundary, clipped to the object.
    fn align_up(&self, offset: u64) -> u64 {
        let bs = self.config.block_size;
        offset
            .min(self.object_size)
            .div_ceil(bs)
            .saturating_mul(bs)
            .min(self.object_size)
    }

    /// Appends `range` to the plan, cut into the fewest parts of at most
    /// `part_size` bytes, of near-equal whole-block sizes (subtle case 8).
    fn push(&self, plan: &mut Plan, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let bs = self.config.block_size;
        let blocks = (range.end - range.start).div_ceil(bs);
        let per_part = self.config.part_size / bs;
        let parts = blocks.div_ceil(per_part);
        let (base, extra) = (blocks / parts, blocks % parts);
        let mut start = range.start;
        for i in 0..parts {
            let n = base + u64::from(i < extra);
            let end = start.saturating_add(n * bs).min(range.end);
            plan.fetch.push(start..end);
            start = end;
        }
        debug_assert_eq!(start, range.end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    /// Checks the documented shape of a plan against the planner's config.
    fn check_shape(ra: &Readahead, plan: &Plan) {
        let c = ra.config();
        let mut prev_end = 0;
        for r in &plan.fetch {
            assert!(r.start < r.end, "empty range {r:?}");
            assert!(r.start >= prev_end, "not ascending/disjoint: {plan:?}");
            assert_eq!(r.start % c.block_size, 0, "unaligned start {r:?}");
            assert!(
                r.end.is_multiple_of(c.block_size) || r.end == ra.object_size(),
                "unaligned end {r:?}"
            );
            assert!(r.end <= ra.object_size(), "past EOF {r:?}");
            assert!(r.end - r.start <= c.part_size, "longer than a part {r:?}");
            prev_end = r.end;
        }
    }

    /// Reads the whole object sequentially with `read_len` reads; returns
    /// every planned range and the window after each read.
    fn scan(ra: &mut Readahead, read_len: u64) -> (Vec<Range<u64>>, Vec<u64>) {
        let mut fetched = Vec::new();
        let mut windows = Vec::new();
        let mut offset = 0;
        while offset < ra.object_size() {
            let plan = ra.plan(offset, read_len);
            check_shape(ra, &plan);
            fetched.extend(plan.fetch);
            // The read's own bytes were planned now or before.
            let end = (offset + read_len).min(ra.object_size());
            let planned_to = fetched.iter().map(|r| r.end).max().unwrap();
            assert!(end <= planned_to && end <= ra.planned().end);
            windows.push(ra.window());
            offset += read_len;
        }
        (fetched, windows)
    }

    fn assert_exact_cover(ranges: &[Range<u64>], size: u64) {
        let mut sorted = ranges.to_vec();
        sorted.sort_by_key(|r| r.start);
        let mut next = 0;
        for r in &sorted {
            assert_eq!(r.start, next, "gap or overlap at {r:?}");
            next = r.end;
        }
        assert_eq!(next, size);
    }

    #[test]
    fn first_read_is_small() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let plan = ra.plan(0, 128 * KIB);
        assert_eq!(plan.fetch, vec![0..MIB]);
        assert_eq!(ra.window(), MIB);

        // Unaligned first read: covering block, then the initial window
        // past the read, as a separate small GET.
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let plan = ra.plan(900 * KIB, 4 * KIB);
        assert_eq!(plan.fetch, vec![0..MIB, MIB..2 * MIB]);
    }

    #[test]
    fn window_doubles_to_the_cap_over_a_sequential_scan() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let (fetched, windows) = scan(&mut ra, 128 * KIB);
        let mut distinct = windows.clone();
        distinct.dedup();
        let expected: Vec<u64> = (0..=6).map(|i| MIB << i).collect();
        assert_eq!(distinct, expected, "window sequence");
        assert_eq!(*windows.last().unwrap(), 64 * MIB);
        // Requests start small and grow: the first GET is one block.
        assert_eq!(fetched[0], 0..MIB);
        assert_eq!(fetched[1], MIB..2 * MIB);
    }

    #[test]
    fn prefetch_stays_about_one_window_ahead() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let mut offset = 0;
        while offset < 512 * MIB {
            ra.plan(offset, 128 * KIB);
            offset += 128 * KIB;
        }
        // At the cap: lead between half a window and a window (+ a block).
        let lead = ra.planned().end - offset;
        assert!((32 * MIB..=65 * MIB).contains(&lead), "lead {lead}");
    }

    #[test]
    fn full_sequential_read_plans_every_byte_exactly_once() {
        for read_len in [4 * KIB, 128 * KIB, MIB, 3 * MIB + 17, 100_000] {
            let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
            let (fetched, _) = scan(&mut ra, read_len);
            let total: u64 = fetched.iter().map(|r| r.end - r.start).sum();
            assert_eq!(total, GIB, "read_len {read_len}");
            assert_exact_cover(&fetched, GIB);
        }
        // An object that is not a whole number of blocks.
        let size = GIB / 3 + 12_345;
        let mut ra = Readahead::new(ReadaheadConfig::default(), size);
        let (fetched, _) = scan(&mut ra, 128 * KIB);
        assert_exact_cover(&fetched, size);
    }

    #[test]
    fn ranges_are_aligned_parts_within_the_object() {
        let config = ReadaheadConfig {
            block_size: 64 * KIB,
            initial_window: 256 * KIB,
            max_window: 40 * MIB,
            part_size: 3 * MIB + 1, // rounded down to 48 blocks
            seek_tolerance: MIB,
        };
        let size = 300 * MIB + 777;
        let mut ra = Readahead::new(config, size);
        assert_eq!(ra.config().part_size, 3 * MIB);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut offset = 0;
        for _ in 0..5_000 {
            // Mostly sequential, with small and large seeks both ways.
            offset = match rng.u8(0..20) {
                0 => rng.u64(0..size + MIB),
                1 => offset.saturating_sub(rng.u64(0..MIB)),
                2 => offset + rng.u64(0..2 * MIB),
                _ => offset,
            };
            let len = rng.u64(1..2 * MIB);
            let plan = ra.plan(offset, len);
            check_shape(&ra, &plan);
            offset += len;
            if offset >= size {
                offset = 0;
            }
        }
        // A huge read is cut into even parts, none longer than part_size.
        let mut ra = Readahead::new(config, size);
        let plan = ra.plan(0, 10 * MIB);
        check_shape(&ra, &plan);
        let lens: Vec<u64> = plan.fetch.iter().map(|r| r.end - r.start).collect();
        // 10 MiB needed = 160 blocks = 4 parts of 40 blocks, not 48+48+48+16.
        assert_eq!(lens, vec![40 * 64 * KIB; 4]);
    }

    #[test]
    fn small_seeks_keep_the_stream() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let mut offset = 0;
        while offset < 40 * MIB {
            ra.plan(offset, 128 * KIB);
            offset += 128 * KIB;
        }
        let window = ra.window();
        assert!(window >= 8 * MIB);
        let high_water = ra.planned().end;

        // Backward by 1.5 MiB: already planned, nothing to fetch.
        let plan = ra.plan(offset - 1536 * KIB, 128 * KIB);
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(ra.window(), window);
        // Back where we were (1.375 MiB forward of the last read's end),
        // then forward by 1.5 MiB. Neither is a seek: nothing at or below
        // the high-water mark is planned again, the window is not reset.
        for offset in [offset, offset + 128 * KIB + 1536 * KIB] {
            let plan = ra.plan(offset, 128 * KIB);
            assert!(plan.fetch.iter().all(|r| r.start >= high_water), "{plan:?}");
            assert!(ra.window() >= window, "stream was reset");
        }
        // A jump beyond the tolerance but inside the planned region is no
        // seek either (subtle case 3).
        let last_end = offset + 128 * KIB + 1664 * KIB;
        let high_water = ra.planned().end;
        let inside = high_water - MIB;
        assert!(inside - last_end > ra.config().seek_tolerance);
        let plan = ra.plan(inside, 128 * KIB);
        assert!(plan.fetch.iter().all(|r| r.start >= high_water), "{plan:?}");
        assert!(ra.window() >= window, "stream was reset");
    }

    #[test]
    fn forward_skip_past_the_region_does_not_fetch_the_gap() {
        let config = ReadaheadConfig {
            block_size: 64 * KIB,
            initial_window: 64 * KIB,
            ..ReadaheadConfig::default()
        };
        let mut ra = Readahead::new(config, GIB);
        assert_eq!(ra.plan(0, 4 * KIB).fetch, vec![0..64 * KIB]);
        let mut offset = 0;
        while ra.window() < 256 * KIB {
            ra.plan(offset, 64 * KIB);
            offset += 64 * KIB;
        }
        let window = ra.window();
        // Skip to 256 KiB past the planned region: within tolerance of the
        // last read, so the stream (and its window) is kept...
        let skip = ra.planned().end + 256 * KIB;
        assert!(skip - offset <= ra.config().seek_tolerance);
        let plan = ra.plan(skip, 4 * KIB);
        assert!(ra.window() >= window, "stream was reset");
        // ...but the skipped gap is not fetched.
        assert_eq!(plan.fetch[0], skip..skip + 64 * KIB, "{plan:?}");
        assert_eq!(ra.planned().start, skip);
    }

    #[test]
    fn backward_read_before_the_region_fills_the_gap() {
        let config = ReadaheadConfig {
            block_size: 64 * KIB,
            ..ReadaheadConfig::default()
        };
        let mut ra = Readahead::new(config, GIB);
        ra.plan(0, 4 * KIB);
        let plan = ra.plan(500 * MIB, 4 * KIB); // seek: region = 1 block
        assert_eq!(plan.fetch, vec![500 * MIB..500 * MIB + 64 * KIB]);
        let plan = ra.plan(500 * MIB - MIB, 4 * KIB); // 1 MiB back
        // Covering block and the gap up to the region, as one range.
        assert_eq!(plan.fetch, vec![499 * MIB..500 * MIB]);
        assert_eq!(ra.planned().start, 499 * MIB);
        // Reading on through the gap fetches nothing new for the gap.
        let plan = ra.plan(499 * MIB + 4 * KIB, 4 * KIB);
        assert!(plan.fetch.iter().all(|r| r.start >= 500 * MIB + 64 * KIB));
    }

    #[test]
    fn far_seek_resets_and_fetches_only_covering_blocks() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let mut offset = 0;
        while offset < 100 * MIB {
            ra.plan(offset, 128 * KIB);
            offset += 128 * KIB;
        }
        assert_eq!(ra.window(), 64 * MIB);

        // Unaligned read straddling a block boundary: exactly two blocks.
        let plan = ra.plan(700 * MIB + 1000 * KIB, 100 * KIB);
        assert_eq!(plan.fetch, vec![700 * MIB..702 * MIB]);
        assert_eq!(ra.window(), MIB);
        // Backward far seek too.
        let plan = ra.plan(10 * MIB + 5, 10);
        assert_eq!(plan.fetch, vec![10 * MIB..11 * MIB]);
        // Random reads keep fetching only their blocks.
        let plan = ra.plan(300 * MIB, 3 * MIB);
        assert_eq!(plan.fetch, vec![300 * MIB..303 * MIB]);

        // Reads continuing this one restart readahead, small: once the
        // lead drops below half a window, one initial window ahead.
        let plan = ra.plan(303 * MIB, 128 * KIB);
        assert_eq!(plan.fetch, vec![303 * MIB..304 * MIB]);
        let plan = ra.plan(303 * MIB + 512 * KIB, 128 * KIB);
        assert_eq!(plan.fetch, vec![304 * MIB..305 * MIB]);
        assert_eq!(ra.window(), 2 * MIB);
    }

    #[test]
    fn reads_at_or_past_eof_fetch_nothing() {
        let size = 5 * MIB + 3;
        let mut ra = Readahead::new(ReadaheadConfig::default(), size);
        let (fetched, _) = scan(&mut ra, 128 * KIB);
        assert_exact_cover(&fetched, size);
        let before = ra.clone();
        assert!(ra.plan(size, 128 * KIB).is_empty());
        assert!(ra.plan(size + 10 * MIB, 1).is_empty());
        assert!(ra.plan(u64::MAX, u64::MAX).is_empty());
        assert!(ra.plan(0, 0).is_empty());
        // EOF reads leave the state alone: still the same stream.
        assert_eq!(ra.window(), before.window());
        assert_eq!(ra.planned(), before.planned());
        // Straddling EOF: clipped, and already planned.
        assert!(ra.plan(size - 1, 100).is_empty());
        // A fresh handle reading across EOF gets the short last block only.
        let mut ra = Readahead::new(ReadaheadConfig::default(), size);
        assert_eq!(ra.plan(5 * MIB, u64::MAX).fetch, vec![5 * MIB..size]);
    }

    #[test]
    fn tiny_objects() {
        let bs = DEFAULT_BLOCK_SIZE;
        let mut ra = Readahead::new(ReadaheadConfig::default(), 0);
        assert!(ra.plan(0, 4096).is_empty());

        for size in [1, bs - 1, bs, bs + 1] {
            let mut ra = Readahead::new(ReadaheadConfig::default(), size);
            let plan = ra.plan(0, 128 * KIB);
            check_shape(&ra, &plan);
            // The first request is one block (or the whole tiny object).
            assert_eq!(plan.fetch, vec![0..size.min(bs)], "size {size}");
            let mut fetched = plan.fetch;
            let mut offset = 128 * KIB;
            while offset < size {
                fetched.extend(ra.plan(offset, 128 * KIB).fetch);
                offset += 128 * KIB;
            }
            assert_exact_cover(&fetched, size);
            assert!(ra.plan(size, 1).is_empty());
        }
    }

    #[test]
    fn forget_replans_lost_ranges() {
        let mut ra = Readahead::new(ReadaheadConfig::default(), GIB);
        let mut offset = 0;
        while offset < 20 * MIB {
            ra.plan(offset, 128 * KIB);
            offset += 128 * KIB;
        }
        let high_water = ra.planned().end;
        assert!(high_water > offset + 4 * MIB);
        // The GET for the bytes just ahead of the reader failed.
        ra.forget(offset + MIB + 5..offset + 3 * MIB);
        assert_eq!(ra.planned().end, offset + MIB);
        // The next reads plan the lost bytes again, contiguously.
        let mut fetched = Vec::new();
        while offset < 30 * MIB {
            fetched.extend(ra.plan(offset, 128 * KIB).fetch);
            offset += 128 * KIB;
        }
        fetched.sort_by_key(|r| r.start);
        assert_eq!(fetched[0].start, 21 * MIB);
        // Forgetting outside the region (consumed long ago, or never
        // planned) changes nothing.
        let planned = ra.planned();
        assert_eq!(planned.start, 28 * MIB, "trails the reader by 2 MiB");
        ra.forget(0..MIB);
        ra.forget(GIB..GIB + 1);
        assert_eq!(ra.planned(), planned);
        // A lost range behind the reader (within tolerance) keeps the
        // stream ahead; a read back there fetches it again.
        ra.forget(29 * MIB..29 * MIB + 512 * KIB);
        assert_eq!(ra.planned(), 30 * MIB..planned.end);
        let plan = ra.plan(29 * MIB + 256 * KIB, 128 * KIB);
        assert_eq!(plan.fetch, vec![29 * MIB..30 * MIB]);
        assert_eq!(ra.planned().end, planned.end);

        ra.reset();
        assert_eq!(ra.plan(MIB, 1).fetch, vec![MIB..2 * MIB], "first read");
    }

    #[test]
    fn zero_initial_window_disables_readahead() {
        let config = ReadaheadConfig {
            initial_window: 0,
            ..ReadaheadConfig::default()
        };
        let mut ra = Readahead::new(config, GIB);
        let (fetched, windows) = scan(&mut ra, 128 * KIB);
        assert!(fetched.iter().all(|r| r.end - r.start == MIB));
        assert_exact_cover(&fetched, GIB);
        assert!(windows.iter().all(|&w| w == 0));
    }

    #[test]
    fn normalized_repairs_bad_values() {
        let c = ReadaheadConfig {
            block_size: 0,
            initial_window: 10,
            max_window: 5,
            part_size: 0,
            seek_tolerance: 0,
        }
        .normalized();
        assert_eq!((c.block_size, c.part_size, c.max_window), (1, 1, 10));
        let c = ReadaheadConfig {
            block_size: 3,
            part_size: 10,
            ..ReadaheadConfig::default()
        }
        .normalized();
        assert_eq!(c.part_size, 9);
    }
}
