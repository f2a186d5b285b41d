//! [`DirtyFile`]: a file with written data that the bucket does not have
//! yet. It owns the file's staging file and knows, byte range by byte
//! range, where the file's current content lives: in the staging file, in
//! the base object (the version the writes were made over), or nowhere
//! (holes, which read as zeros and are staged as such).
//!
//! The state, in [`DirtyState`]:
//! * `size`, `meta` (mode, owner, explicit mtime, xattrs): the file as the
//!   user sees it;
//! * `base` and `base_valid`: bytes below `base_valid` that are not dirty
//!   come from `base`; from `base_valid` on, every byte is dirty;
//! * `dirty`: ranges the bucket does not have; `local`: ranges whose
//!   current bytes the staging file holds (dirty ones, and ones uploaded
//!   since, which reads still take from disk);
//! * generations: every change bumps `generation`; the journal and the
//!   uploads say which generation they describe.
//!
//! Subtle cases:
//! 1. **Writes during an upload.** An upload works on a [`Snapshot`] of
//!    generation g. Changes made while it runs are collected apart
//!    (`Inflight::since`); when the upload succeeds, they become the new
//!    dirty set over the new base, so nothing written meanwhile is
//!    forgotten. If the upload fails, `dirty` still holds everything.
//! 2. **Holes.** Extending the file (a write past the end, a truncate up)
//!    marks the gap dirty: those bytes are zeros now, whatever the base
//!    held there. The staging file never holds bytes past `size`
//!    (truncation cuts it too), so the gap reads as zeros from it.
//! 3. **Space.** Bytes newly held by the staging file are claimed from the
//!    staging area before they are written, and given back when truncated
//!    away or when the file is removed; a write that cannot be staged fails
//!    whole with ENOSPC and changes nothing.
//! 4. **Mtime.** Writes do not make the metadata dirty: the object's
//!    Last-Modified is its mtime. An explicit mtime (utimens) is metadata;
//!    a write after it drops it (the file was modified later), which is a
//!    metadata change when the base carried an `mtime` header.
//! 5. **What is owed.** An upload covers the generation the last close or
//!    fsync staged (journaled), not every write: a file written on through
//!    another descriptor after a `close` (`dd` closes a duplicate at once)
//!    is not uploaded again and again while it grows. The snapshot may hold
//!    newer bytes than that generation; they are uploaded again after the
//!    next close.

use crate::fs::write::plan::Snapshot as PlanSnapshot;
use crate::fs::write::stream::{Stream, StreamPart};
use crate::staging::StagingArea;
use crate::staging::journal::{BaseObject, FileMeta, StagedState};
use parking_lot::Mutex;
use rangemap::RangeSet;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// Errno values of this layer.
pub type Errno = i32;

/// How uploads of the file are going, for waiters (fsync, close).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The last generation uploaded.
    pub uploaded: u64,
    /// The last failure: the generation it tried and the errno.
    pub failed: Option<(u64, Errno)>,
}

/// An upload in flight (subtle case 1).
#[derive(Debug)]
struct Inflight {
    generation: u64,
    size: u64,
    since: RangeSet<u64>,
    /// Smallest size the file had since the snapshot.
    min_size: u64,
    meta_changed: bool,
}

/// The mutable state of a dirty file.
#[derive(Debug)]
pub struct DirtyState {
    pub key: String,
    pub size: u64,
    pub base: Option<BaseObject>,
    pub base_valid: u64,
    /// The base object has an explicit `mtime` header (subtle case 4).
    pub base_has_mtime: bool,
    dirty: RangeSet<u64>,
    local: RangeSet<u64>,
    pub meta: FileMeta,
    pub meta_changed: bool,
    /// Modification time shown while dirty.
    pub mtime: SystemTime,
    generation: u64,
    journaled: u64,
    inflight: Option<Inflight>,
    /// Bytes claimed from the staging area.
    claimed: u64,
    /// Open handles of the inode that write or read through this file.
    pub handles: usize,
    /// The name was removed: never upload again.
    pub unlinked: bool,
    /// An upload task owns the file (see [`DirtyFile::claim_task`]).
    task_running: bool,
    /// The last record written to the journal (kept for its compaction).
    last_record: Option<StagedState>,
}

/// What an upload of one generation works from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u64,
    pub key: String,
    pub plan: PlanSnapshot,
    pub meta: FileMeta,
}

/// Where the bytes of one piece of a read come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The staging file.
    Local(Range<u64>),
    /// The base object, pinned to this ETag.
    Base(Range<u64>, BaseObject),
}

/// A staged file. Shared by the inode's handles and its upload task.
#[derive(Debug)]
pub struct DirtyFile {
    pub id: u64,
    file: File,
    state: Mutex<DirtyState>,
    progress: watch::Sender<Progress>,
    /// Held while an upload runs, and by operations that must not overlap
    /// one (rename, unlink).
    pub upload_lock: tokio::sync::Mutex<()>,
    /// The streaming multipart upload of a file written front to back
    /// (stream.rs); taken after the state lock, never before it.
    stream: Mutex<Option<Stream>>,
}

fn total(set: &RangeSet<u64>) -> u64 {
    set.iter().map(|r| r.end - r.start).sum()
}

fn overlap(set: &RangeSet<u64>, range: &Range<u64>) -> u64 {
    set.overlapping(range)
        .map(|r| r.end.min(range.end) - r.start.max(range.start))
        .sum()
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl DirtyFile {
    /// A new dirty file over `base` (None: the key has no object yet). With
    /// `truncate` the content starts empty (O_TRUNC, or a new file).
    pub fn new(
        id: u64,
        file: File,
        key: String,
        base: Option<BaseObject>,
        base_has_mtime: bool,
        meta: FileMeta,
        truncate: bool,
    ) -> DirtyFile {
        let size = if truncate {
            0
        } else {
            base.as_ref().map_or(0, |b| b.size)
        };
        let created = base.is_none() || truncate;
        let mut st = DirtyState::empty(key, meta);
        st.size = size;
        st.base_valid = size;
        st.base = base;
        st.base_has_mtime = base_has_mtime;
        // A new or emptied file must be uploaded even if nothing is
        // written to it.
        st.generation = u64::from(created);
        DirtyFile::with_state(id, file, st)
    }

    /// A dirty file rebuilt from its journal record after a restart.
    pub fn recover(file: File, staged: StagedState) -> DirtyFile {
        let mut st = DirtyState::empty(staged.key.clone(), staged.meta.clone());
        for &(s, e) in &staged.dirty {
            if s < e {
                st.dirty.insert(s..e);
            }
        }
        st.local = st.dirty.clone();
        // What the area counted for this file at open: its allocated bytes
        // (holes are dirty but take no space).
        let allocated = file
            .metadata()
            .map(|m| crate::staging::allocated(&m))
            .unwrap_or(0);
        st.claimed = total(&st.dirty).min(allocated);
        st.size = staged.size;
        st.base = staged.base.clone();
        st.base_valid = staged.base_valid;
        st.meta_changed = true;
        st.generation = staged.generation;
        st.journaled = staged.generation;
        st.last_record = Some(staged.clone());
        DirtyFile::with_state(staged.id, file, st)
    }

    fn with_state(id: u64, file: File, state: DirtyState) -> DirtyFile {
        DirtyFile {
            id,
            file,
            state: Mutex::new(state),
            progress: watch::Sender::new(Progress::default()),
            upload_lock: tokio::sync::Mutex::new(()),
            stream: Mutex::new(None),
        }
    }

    /// Runs `f` on the state (never across I/O).
    pub fn with<T>(&self, f: impl FnOnce(&mut DirtyState) -> T) -> T {
        f(&mut self.state.lock())
    }

    pub fn key(&self) -> String {
        self.state.lock().key.clone()
    }

    pub fn size(&self) -> u64 {
        self.state.lock().size
    }

    pub fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Writes `data` at `offset`; returns the bytes written (all of them).
    pub fn write(&self, staging: &StagingArea, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        let range = offset..end;
        let new_bytes = {
            let st = self.state.lock();
            if st.unlinked && st.handles == 0 {
                return Err(libc::EBADF);
            }
            data.len() as u64 - overlap(&st.local, &range)
        };
        staging.claim_space(new_bytes)?;
        if let Err(e) = self.file.write_all_at(data, offset) {
            staging.release_space(new_bytes);
            if e.raw_os_error() == Some(libc::ENOSPC) {
                staging.refresh_free_space();
            }
            return Err(io_errno(&e));
        }
        let mut st = self.state.lock();
        if offset > st.size {
            let gap = st.size..offset;
            st.mark(gap);
        }
        st.mark(range);
        st.size = st.size.max(end);
        st.claimed += new_bytes;
        st.touched();
        if let Some(stream) = self.stream.lock().as_mut()
            && offset < stream.next_offset
        {
            // Stream subtle case 1: a part already sent may change.
            stream.broken = true;
        }
        Ok(data.len() as u32)
    }

    /// Sets the size (truncate or extend).
    pub fn truncate(&self, staging: &StagingArea, size: u64) -> Result<(), Errno> {
        let mut st = self.state.lock();
        if let Some(stream) = self.stream.lock().as_mut() {
            stream.broken = true;
        }
        if size < st.size {
            self.file.set_len(size).map_err(|e| io_errno(&e))?;
            let cut = size..u64::MAX;
            let freed = overlap(&st.local, &cut).min(st.claimed);
            st.dirty.remove(cut.clone());
            st.local.remove(cut.clone());
            st.base_valid = st.base_valid.min(size);
            if let Some(inflight) = &mut st.inflight {
                inflight.since.remove(cut);
                inflight.min_size = inflight.min_size.min(size);
            }
            staging.release_space(freed);
            st.claimed -= freed;
        } else if size > st.size {
            let gap = st.size..size;
            st.mark(gap);
        }
        st.size = size;
        st.touched();
        Ok(())
    }

    /// Changes the metadata with `f` (mode, owner, explicit mtime, xattrs).
    pub fn set_meta(&self, f: impl FnOnce(&mut FileMeta)) {
        let mut st = self.state.lock();
        f(&mut st.meta);
        st.meta_changed = true;
        if let Some(inflight) = &mut st.inflight {
            inflight.meta_changed = true;
        }
        st.generation += 1;
    }

    /// Where the bytes of `offset..offset+len` (clipped to the size) are.
    pub fn pieces(&self, offset: u64, len: u64) -> Vec<Piece> {
        let st = self.state.lock();
        let end = offset.saturating_add(len).min(st.size);
        if offset >= end {
            return Vec::new();
        }
        let want = offset..end;
        let mut out = Vec::new();
        let mut at = offset;
        for r in st.local.overlapping(&want) {
            let (s, e) = (r.start.max(offset), r.end.min(end));
            if s > at {
                st.base_pieces(at..s, &mut out);
            }
            out.push(Piece::Local(s..e));
            at = e;
        }
        if at < end {
            st.base_pieces(at..end, &mut out);
        }
        out
    }

    /// Reads `range` from the staging file (zeros past its end).
    pub fn read_local(&self, range: Range<u64>) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        crate::store::PartSource::read_at(self, &mut buf, range.start).map_err(|e| io_errno(&e))?;
        Ok(buf)
    }

    /// Keeps `data`, the base object's bytes at `offset`, in the staging
    /// file where it holds nothing of the file's yet, so a part can be
    /// streamed from the staging file alone (upload.rs, subtle case 2).
    /// Bytes written or cut since the snapshot are left alone: the check
    /// and the write happen under the state lock, so no newer write is
    /// overwritten. Claims the space it uses.
    pub fn keep_base_bytes(
        &self,
        staging: &StagingArea,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        let mut st = self.state.lock();
        let end = (offset + data.len() as u64).min(st.base_valid).min(st.size);
        if offset >= end {
            return Ok(());
        }
        let mut missing = RangeSet::new();
        missing.insert(offset..end);
        for r in st.local.overlapping(&(offset..end)) {
            missing.remove(r.clone());
        }
        for r in missing.iter() {
            let len = r.end - r.start;
            staging.claim_space(len)?;
            let from = (r.start - offset) as usize;
            if let Err(e) = self
                .file
                .write_all_at(&data[from..from + len as usize], r.start)
            {
                staging.release_space(len);
                return Err(io_errno(&e));
            }
            st.claimed += len;
            st.local.insert(r.clone());
        }
        Ok(())
    }

    /// The record describing the current state, if the journal does not
    /// have it yet; marks it journaled.
    pub fn journal_record(&self) -> Option<StagedState> {
        let mut st = self.state.lock();
        if st.journaled >= st.generation || st.unlinked {
            return None;
        }
        st.journaled = st.generation;
        let record = StagedState {
            id: self.id,
            generation: st.generation,
            key: st.key.clone(),
            size: st.size,
            base: st.base.clone(),
            base_valid: st.base_valid,
            dirty: st.dirty.iter().map(|r| (r.start, r.end)).collect(),
            meta: st.meta.clone(),
        };
        st.last_record = Some(record.clone());
        Some(record)
    }

    /// The last journal record of a file whose upload is still owed (for a
    /// compaction of the journal).
    pub fn owed_record(&self) -> Option<StagedState> {
        let st = self.state.lock();
        let owed = !st.unlinked && st.journaled > self.progress.borrow().uploaded;
        owed.then(|| st.last_record.clone()).flatten()
    }

    /// What a close does, for tests: stage the current generation, then
    /// start its upload.
    #[cfg(test)]
    pub fn stage_and_begin(&self) -> Option<Snapshot> {
        let _ = self.journal_record();
        self.begin_upload()
    }

    /// The journal write of the last record failed: write it again next
    /// time.
    pub fn journal_failed(&self) {
        self.state.lock().journaled = 0;
    }

    /// The next [`DirtyFile::journal_record`] describes the file even if
    /// its content did not change (its key did).
    pub fn force_journal(&self) {
        let mut st = self.state.lock();
        st.generation += 1;
        st.journaled = 0;
    }

    /// Starts an upload of the current generation (subtle case 1); `None`
    /// when there is nothing to upload or one is running.
    pub fn begin_upload(&self) -> Option<Snapshot> {
        let mut st = self.state.lock();
        let uploaded = self.progress.borrow().uploaded;
        // Only what a close (or fsync) staged is owed: writes since then
        // wait for the next one (subtle case 5).
        if st.unlinked || st.inflight.is_some() || st.journaled <= uploaded {
            return None;
        }
        st.inflight = Some(Inflight {
            generation: st.generation,
            size: st.size,
            since: RangeSet::new(),
            min_size: st.size,
            meta_changed: false,
        });
        Some(Snapshot {
            generation: st.generation,
            key: st.key.clone(),
            plan: PlanSnapshot {
                size: st.size,
                base: st.base.clone(),
                base_valid: st.base_valid,
                dirty: st.dirty.iter().cloned().collect(),
                meta_changed: st.meta_changed,
            },
            meta: st.meta.clone(),
        })
    }

    /// The upload of `generation` made `new_base` the object.
    pub fn finish_upload(&self, generation: u64, new_base: BaseObject) {
        let mut st = self.state.lock();
        let Some(inflight) = st.inflight.take() else {
            return;
        };
        debug_assert_eq!(inflight.generation, generation);
        st.base_valid = inflight.min_size.min(inflight.size).min(new_base.size);
        st.base = Some(new_base);
        st.base_has_mtime = st.meta.mtime.is_some();
        st.dirty = inflight.since;
        st.meta_changed = inflight.meta_changed;
        drop(st);
        self.progress.send_modify(|p| {
            p.uploaded = p.uploaded.max(generation);
            if p.failed.is_some_and(|(g, _)| g <= generation) {
                p.failed = None;
            }
        });
    }

    /// The upload of `generation` failed with `errno`; everything stays
    /// dirty.
    pub fn fail_upload(&self, generation: u64, errno: Errno) {
        self.state.lock().inflight = None;
        self.progress
            .send_modify(|p| p.failed = Some((generation, errno)));
    }

    /// Replaces the base after a HEAD showed it differs from what was
    /// believed (size, appendability) with the same ETag.
    pub fn set_base(&self, base: BaseObject) {
        self.state.lock().base = Some(base);
    }

    /// Continues over `found`, the object as it is now, after the base
    /// turned out to be gone or different: bytes not written here come
    /// from `found` where it has them, and are zeros past its end.
    pub fn rebase(&self, found: Option<BaseObject>) {
        let mut st = self.state.lock();
        let valid = found.as_ref().map_or(0, |b| b.size).min(st.base_valid);
        if valid < st.size {
            // Unwritten bytes past the new base's end are zeros now. The
            // staging file holds zeros wherever it holds nothing written
            // (truncation cuts it), so marking them staged is enough.
            let gap = valid..st.size;
            st.mark(gap);
        }
        st.base_valid = valid;
        st.base = found;
        // Bytes kept locally but not written here (uploaded ones, base
        // bytes kept for a streamed part) belong to the old base: reads
        // must take them from the new one.
        st.local = st.dirty.clone();
        st.generation += 1;
    }

    /// Waits until generation `generation` is uploaded; the errno of a
    /// failed attempt at it (or a later one) ends the wait early.
    pub async fn wait_uploaded(&self, generation: u64) -> Result<(), Errno> {
        let mut rx = self.progress.subscribe();
        let outcome = rx
            .wait_for(|p| {
                p.uploaded >= generation || p.failed.is_some_and(|(g, _)| g >= generation)
            })
            .await
            .map(|p| p.clone());
        match outcome {
            Ok(p) if p.uploaded >= generation => Ok(()),
            Ok(p) => Err(p.failed.map_or(libc::EIO, |(_, e)| e)),
            Err(_) => Err(libc::EIO),
        }
    }

    /// Whether every generation is uploaded.
    pub fn is_clean(&self) -> bool {
        self.clean_in(&self.state.lock())
    }

    /// Whether no handle holds the file and it owes no upload (or was
    /// unlinked): the file may leave the registry.
    pub fn is_idle(&self) -> bool {
        let st = self.state.lock();
        st.handles == 0 && (st.unlinked || self.clean_in(&st))
    }

    /// [`Self::is_clean`] with the state already locked.
    fn clean_in(&self, st: &DirtyState) -> bool {
        st.inflight.is_none() && self.progress.borrow().uploaded >= st.generation
    }

    /// Makes the caller the file's upload task, unless one runs already.
    pub fn claim_task(&self) -> bool {
        let mut st = self.state.lock();
        !std::mem::replace(&mut st.task_running, true)
    }

    /// Called by the upload task when it found nothing to upload: true if
    /// work arrived meanwhile (the task goes on), else the task ends.
    pub fn release_task(&self) -> bool {
        let mut st = self.state.lock();
        let pending = !st.unlinked && st.journaled > self.progress.borrow().uploaded;
        if !pending {
            st.task_running = false;
        }
        pending
    }

    /// Whether a staged generation awaits upload (and the file is not
    /// unlinked).
    pub fn has_pending(&self) -> bool {
        let st = self.state.lock();
        !st.unlinked && st.journaled > self.progress.borrow().uploaded
    }

    /// Whether the file is new here and still empty: never uploaded, no
    /// base object, size 0.
    pub fn is_new_and_empty(&self) -> bool {
        let st = self.state.lock();
        st.base.is_none() && st.size == 0 && self.progress.borrow().uploaded == 0
    }

    /// Whether changes were made that no close or fsync staged yet.
    pub fn has_unstaged(&self) -> bool {
        let st = self.state.lock();
        !st.unlinked && st.generation > st.journaled
    }

    /// The next part to stream, if the file is being written front to back
    /// and one has filled (stream.rs). Starts the stream at the first part.
    pub fn next_stream_part(
        &self,
        part_size: u64,
    ) -> Option<(StreamPart, Arc<tokio::sync::OnceCell<String>>)> {
        let st = self.state.lock();
        let from_scratch = st.base.is_none() || st.base_valid == 0;
        let sequential = match st.dirty.iter().next() {
            Some(r) => r.start == 0 && r.end == st.size && st.dirty.iter().count() == 1,
            None => false,
        };
        if !from_scratch || !sequential || st.inflight.is_some() || st.unlinked {
            return None;
        }
        if st.size < 2 * part_size {
            return None;
        }
        let mut stream = self.stream.lock();
        let stream = stream.get_or_insert_with(|| Stream::new(st.key.clone(), st.meta.clone()));
        if stream.key != st.key {
            stream.broken = true;
        }
        let part = stream.next_part(st.size, part_size)?;
        Some((part, stream.upload_id.clone()))
    }

    /// Runs `f` on the stream, if there is one.
    pub fn with_stream<T>(&self, f: impl FnOnce(&mut Stream) -> T) -> Option<T> {
        self.stream.lock().as_mut().map(f)
    }

    /// Removes the stream (finished or aborted).
    pub fn take_stream(&self) -> Option<Stream> {
        self.stream.lock().take()
    }

    /// Bytes claimed from the staging area (to give back on removal).
    pub fn claimed(&self) -> u64 {
        self.state.lock().claimed
    }
}

/// Streamed upload parts read the staging file (store/streamed.rs).
impl crate::store::PartSource for DirtyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Past the staging file's end the file holds zeros (a hole).
        buf[done..].fill(0);
        Ok(())
    }
}

impl DirtyState {
    /// An empty file at `key` with `meta` and no base.
    fn empty(key: String, meta: FileMeta) -> DirtyState {
        DirtyState {
            key,
            size: 0,
            base: None,
            base_valid: 0,
            base_has_mtime: false,
            dirty: RangeSet::new(),
            local: RangeSet::new(),
            meta,
            meta_changed: false,
            mtime: SystemTime::now(),
            generation: 0,
            journaled: 0,
            inflight: None,
            claimed: 0,
            handles: 0,
            unlinked: false,
            task_running: false,
            last_record: None,
        }
    }

    /// `range` now holds new bytes in the staging file.
    fn mark(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        self.dirty.insert(range.clone());
        self.local.insert(range.clone());
        if let Some(inflight) = &mut self.inflight {
            inflight.since.insert(range);
        }
    }

    /// Records a change of the content (subtle case 4).
    fn touched(&mut self) {
        self.generation += 1;
        self.mtime = SystemTime::now();
        if self.meta.mtime.is_some() || self.base_has_mtime {
            self.meta.mtime = None;
            self.base_has_mtime = false;
            self.meta_changed = true;
            if let Some(inflight) = &mut self.inflight {
                inflight.meta_changed = true;
            }
        }
    }

    /// Pieces of `range` not held locally: base bytes below `base_valid`.
    fn base_pieces(&self, range: Range<u64>, out: &mut Vec<Piece>) {
        let below = range.start..range.end.min(self.base_valid);
        match &self.base {
            Some(base) if !below.is_empty() => out.push(Piece::Base(below.clone(), base.clone())),
            _ => {}
        }
        // Past `base_valid` everything is dirty, hence local: nothing left.
        debug_assert!(below.end >= range.end || below.is_empty() && range.is_empty());
    }

    /// Bytes held by the staging file that are dirty (for tests).
    pub fn dirty_ranges(&self) -> Vec<Range<u64>> {
        self.dirty.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::StagingArea;

    fn area(name: &str) -> (StagingArea, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("bucketfs-dirty-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (StagingArea::open(&dir, u64::MAX).unwrap().0, dir)
    }

    fn base(size: u64) -> Option<BaseObject> {
        Some(BaseObject {
            etag: "e1".into(),
            size,
            appendable: false,
        })
    }

    fn file(area: &StagingArea, b: Option<BaseObject>, truncate: bool) -> DirtyFile {
        let (id, f) = area.create().unwrap();
        DirtyFile::new(id, f, "k".into(), b, false, FileMeta::default(), truncate)
    }

    fn read(f: &DirtyFile, offset: u64, len: u64) -> Vec<u8> {
        // The base object's byte at offset x is b'B'.
        let mut out = Vec::new();
        for p in f.pieces(offset, len) {
            match p {
                Piece::Local(r) => out.extend(f.read_local(r).unwrap()),
                Piece::Base(r, _) => {
                    out.extend(std::iter::repeat_n(b'B', (r.end - r.start) as usize))
                }
            }
        }
        out
    }

    #[test]
    fn reads_mix_staged_and_base_bytes() {
        let (a, dir) = area("mix");
        let f = file(&a, base(10), false);
        assert_eq!(f.write(&a, 2, b"xy").unwrap(), 2);
        assert_eq!(read(&f, 0, 100), b"BBxyBBBBBB");
        // Past the end: a hole of zeros, then the bytes.
        f.write(&a, 12, b"z").unwrap();
        assert_eq!(read(&f, 8, 100), b"BB\0\0z");
        assert_eq!(f.size(), 13);
        let snap = f.stage_and_begin().unwrap();
        assert_eq!(snap.plan.dirty, vec![2..4, 10..13]);
        assert_eq!(snap.plan.base_valid, 10);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn truncate_down_then_up_reads_zeros_not_the_base() {
        let (a, dir) = area("trunc");
        let f = file(&a, base(10), false);
        f.write(&a, 0, b"abcdefghij").unwrap();
        f.truncate(&a, 3).unwrap();
        f.truncate(&a, 6).unwrap();
        assert_eq!(read(&f, 0, 100), b"abc\0\0\0");
        let f = file(&a, base(10), false);
        f.truncate(&a, 4).unwrap();
        f.truncate(&a, 6).unwrap();
        assert_eq!(read(&f, 0, 100), b"BBBB\0\0");
        let snap = f.stage_and_begin().unwrap();
        assert_eq!((snap.plan.base_valid, snap.plan.dirty), (4, vec![4..6]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_during_an_upload_stay_dirty() {
        let (a, dir) = area("during");
        let f = file(&a, None, true);
        f.write(&a, 0, b"hello").unwrap();
        let snap = f.stage_and_begin().unwrap();
        assert!(f.stage_and_begin().is_none(), "one upload at a time");
        f.write(&a, 5, b" world").unwrap();
        f.finish_upload(
            snap.generation,
            BaseObject {
                etag: "new".into(),
                size: 5,
                appendable: true,
            },
        );
        assert!(!f.is_clean());
        let next = f.stage_and_begin().unwrap();
        assert_eq!(next.plan.base.as_ref().unwrap().etag, "new");
        assert_eq!(
            (next.plan.base_valid, next.plan.dirty.clone()),
            (5, vec![5..11])
        );
        assert_eq!(read(&f, 0, 100), b"hello world");
        // A failure keeps everything; a retry covers it all again.
        f.fail_upload(next.generation, libc::EIO);
        let again = f.stage_and_begin().unwrap();
        assert_eq!(again.plan.dirty, vec![5..11]);
        f.finish_upload(
            again.generation,
            BaseObject {
                etag: "newer".into(),
                size: 11,
                appendable: true,
            },
        );
        assert!(f.is_clean());
        // Reads still come from disk after the upload.
        assert_eq!(f.pieces(0, 11), vec![Piece::Local(0..11)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_staging_limit_refuses_a_write_whole() {
        let dir = std::env::temp_dir().join(format!("bucketfs-dirty-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (a, _) = StagingArea::open(&dir, 10).unwrap();
        let f = file(&a, None, true);
        f.write(&a, 0, b"12345678").unwrap();
        assert_eq!(f.write(&a, 8, b"abc"), Err(libc::ENOSPC));
        assert_eq!(f.size(), 8);
        // Overwriting staged bytes needs no new space.
        f.write(&a, 0, b"abcdefgh").unwrap();
        assert_eq!(read(&f, 0, 100), b"abcdefgh");
        f.truncate(&a, 2).unwrap();
        assert_eq!(a.staged_bytes(), 2);
        f.write(&a, 2, b"xyzuvw").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn waiters_see_uploads_and_failures() {
        let (a, dir) = area("wait");
        let f = std::sync::Arc::new(file(&a, None, true));
        f.write(&a, 0, b"x").unwrap();
        let g = f.generation();
        let snap = f.stage_and_begin().unwrap();
        f.fail_upload(snap.generation, libc::EACCES);
        assert_eq!(f.wait_uploaded(g).await, Err(libc::EACCES));
        let snap = f.stage_and_begin().unwrap();
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait_uploaded(g).await })
        };
        f.finish_upload(
            snap.generation,
            BaseObject {
                etag: "x".into(),
                size: 1,
                appendable: false,
            },
        );
        assert_eq!(waiter.await.unwrap(), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn owed_records_last_until_the_upload() {
        let (a, dir) = area("owed");
        let f = file(&a, None, true);
        f.write(&a, 0, b"abc").unwrap();
        assert_eq!(f.owed_record(), None, "nothing staged by a close yet");
        let snap = f.stage_and_begin().unwrap();
        assert_eq!(f.owed_record().map(|r| r.size), Some(3));
        f.finish_upload(
            snap.generation,
            BaseObject {
                etag: "e".into(),
                size: 3,
                appendable: false,
            },
        );
        assert_eq!(f.owed_record(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn journal_records_follow_generations() {
        let (a, dir) = area("journal");
        let f = file(&a, None, true);
        let first = f.journal_record().unwrap();
        assert_eq!((first.size, first.base.clone()), (0, None));
        assert!(f.journal_record().is_none(), "nothing new");
        f.write(&a, 0, b"abc").unwrap();
        let second = f.journal_record().unwrap();
        assert!(second.generation > first.generation);
        assert_eq!(second.dirty, vec![(0, 3)]);
        let rebuilt = DirtyFile::recover(a.open_file(f.id).unwrap(), second);
        assert_eq!(read(&rebuilt, 0, 10), b"abc");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
