//! Write-back staging on local disk: the directory where written file data
//! waits for its upload, and the journal that says what it holds.
//!
//! Layout of a staging directory (one per mounted source, see
//! `mount::config`):
//!
//! ```text
//! DIR/lock       held (flock) by the daemon using DIR; a second one is refused
//! DIR/journal    journal.rs: what the staged files hold, which are uploaded
//! DIR/files/N    staged data of file N, at the file's own offsets (sparse)
//! ```
//!
//! Subtle cases:
//! 1. **One daemon per directory.** Two daemons sharing a journal would
//!    upload each other's files twice and delete each other's staging
//!    files; the lock makes the second one fail at mount time, with the
//!    path in the message.
//! 2. **Leftovers.** At open, staging files that no pending journal record
//!    names (uploaded, dropped, or created by a daemon that died before
//!    any close) are removed: nobody was promised their bytes.
//! 3. **Space.** Writes are refused with ENOSPC before the disk under the
//!    directory is down to its last [`StagingArea::reserve`] bytes (so the
//!    journal, which needs a little room to say an upload finished, and the
//!    rest of the system keep some) or when the staged bytes would pass the
//!    `limit`. The disk's own ENOSPC is passed on the same way. Either way
//!    the write fails whole, and what was staged before is untouched.

pub mod handover;
pub mod journal;

use journal::{Journal, Record, Replay};
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Free space kept on the staging disk (subtle case 3): 256 MiB, or less
/// on a small disk (1/64 of it).
const RESERVE_MAX: u64 = 256 << 20;

/// Journal size past which it is rewritten with only its live records.
pub const JOURNAL_COMPACT_AT: u64 = 16 << 20;

/// How long a free-space reading is trusted: statvfs on every 4 KiB write
/// would cost more than the write.
const FREE_SPACE_TTL: Duration = Duration::from_millis(500);

/// Bytes a file occupies on disk (its holes take none).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// Why a staging directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    #[error("cannot use staging directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "staging directory {path} is in use by another bucketfs process (one daemon per directory; give this mount another cache_dir)"
    )]
    Busy { path: PathBuf },
    #[error(
        "staging directory {path} is in use by bucketfs process {pid}, which serves {mount_point} (one daemon per directory: unmount it first, or give this mount another cache_dir)",
        mount_point = mount_point.display()
    )]
    Serving {
        path: PathBuf,
        pid: u32,
        mount_point: PathBuf,
    },
}

/// An open staging directory.
#[derive(Debug)]
pub struct StagingArea {
    dir: PathBuf,
    journal: Mutex<Journal>,
    next_id: AtomicU64,
    /// Bytes staged files may hold in all (`u64::MAX`: no limit but the disk).
    limit: u64,
    /// Bytes the staged files hold now (as reported by their owners).
    staged: AtomicU64,
    reserve: u64,
    free: Mutex<Option<(Instant, u64)>>,
    /// Held (flock) for the area's life; holds a [`handover::Holder`].
    lock: File,
}

impl StagingArea {
    /// Opens (creating) the staging directory `dir`, takes its lock, replays
    /// and compacts its journal and removes leftover files (subtle case 2).
    /// Returns what the journal still owes.
    pub fn open(dir: &Path, limit: u64) -> Result<(StagingArea, Replay), StagingError> {
        let io = |source| StagingError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir.join("files")).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StagingError::Busy {
                    path: dir.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // A drain status left by a daemon that died while draining.
        let _ = std::fs::remove_file(dir.join("draining"));
        let (journal, replay) = Journal::open(&dir.join("journal")).map_err(io)?;
        let live: std::collections::HashSet<u64> = replay.staged.iter().map(|s| s.id).collect();
        let mut staged = 0;
        for entry in std::fs::read_dir(dir.join("files")).map_err(io)? {
            let entry = entry.map_err(io)?;
            let id = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok());
            match id {
                Some(id) if live.contains(&id) => {
                    // Allocated bytes, not the length: staged files are
                    // sparse (a truncate up stages no bytes).
                    staged += entry.metadata().map(|m| allocated(&m)).unwrap_or(0);
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let total = fs_total_space(dir).unwrap_or(0);
        let area = StagingArea {
            dir: dir.to_path_buf(),
            journal: Mutex::new(journal),
            next_id: AtomicU64::new(replay.next_id.max(1)),
            limit,
            staged: AtomicU64::new(staged),
            reserve: RESERVE_MAX.min(total / 64),
            free: Mutex::new(None),
            lock,
        };
        area.write_lock_note(
            &serde_json::to_string(&handover::Holder {
                pid: std::process::id(),
                mount_point: None,
            })
            .expect("a holder serializes"),
        );
        Ok((area, replay))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Free space kept on the disk (subtle case 3).
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join("files").join(id.to_string())
    }

    /// A new, empty staging file and its id.
    pub fn create(&self) -> std::io::Result<(u64, File)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path_of(id))?;
        Ok((id, file))
    }

    /// Opens the staging file of a replayed record.
    pub fn open_file(&self, id: u64) -> std::io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path_of(id))
    }

    /// Deletes staging file `id` (its bytes are uploaded or unwanted) and
    /// stops counting its `bytes`.
    pub fn remove(&self, id: u64, bytes: u64) {
        let _ = std::fs::remove_file(self.path_of(id));
        self.release_space(bytes);
    }

    /// Appends `record` to the journal.
    pub fn record(&self, record: &Record) -> std::io::Result<()> {
        self.journal.lock().append(record)
    }

    /// Rewrites the journal with only what is still owed once it holds
    /// more than [`JOURNAL_COMPACT_AT`] bytes; `live` gives the latest
    /// record of every file still owed (called under the journal's lock,
    /// so nothing appended meanwhile is lost).
    pub fn compact_journal_if_large(
        &self,
        live: impl FnOnce() -> Vec<journal::StagedState>,
    ) -> std::io::Result<()> {
        let mut journal = self.journal.lock();
        if journal.len() < JOURNAL_COMPACT_AT {
            return Ok(());
        }
        journal.rewrite(&live())
    }

    /// Empties the journal (nothing is pending).
    pub fn clear_journal(&self) -> std::io::Result<()> {
        self.journal.lock().clear()
    }

    /// Makes the journal durable (fsync of a file).
    pub fn sync_journal(&self) -> std::io::Result<()> {
        self.journal.lock().sync()
    }

    /// Reserves `bytes` more of staged data, or fails with ENOSPC (subtle
    /// case 3).
    pub fn claim_space(&self, bytes: u64) -> Result<(), i32> {
        if bytes == 0 {
            return Ok(());
        }
        let staged = self.staged.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if staged > self.limit || self.free_space() < bytes.saturating_add(self.reserve) {
            self.release_space(bytes);
            return Err(libc::ENOSPC);
        }
        Ok(())
    }

    /// Replaces the contents of the lock file with `line` (handover.rs).
    fn write_lock_note(&self, line: &str) {
        use std::os::unix::fs::FileExt;
        let _ = self.lock.set_len(0);
        let _ = self.lock.write_all_at(format!("{line}\n").as_bytes(), 0);
    }

    /// Gives back `bytes` claimed earlier.
    pub fn release_space(&self, bytes: u64) {
        let _ = self
            .staged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(bytes))
            });
    }

    /// Bytes staged now.
    pub fn staged_bytes(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }

    /// Free bytes on the disk, read at most every [`FREE_SPACE_TTL`]; the
    /// bytes claimed since the reading are taken off it.
    fn free_space(&self) -> u64 {
        let mut free = self.free.lock();
        match *free {
            Some((at, bytes)) if at.elapsed() < FREE_SPACE_TTL => bytes,
            _ => {
                let bytes = fs_free_space(&self.dir).unwrap_or(u64::MAX);
                *free = Some((Instant::now(), bytes));
                bytes
            }
        }
    }

    /// Forgets the free-space reading (after a write hit the disk's own
    /// ENOSPC, or space was freed).
    pub fn refresh_free_space(&self) {
        *self.free.lock() = None;
    }
}

fn statvfs(path: &Path) -> Option<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is a NUL-terminated path; statvfs fills the zeroed
    // struct and we read it only when it reports success.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(c.as_ptr(), &mut st) == 0).then_some(st)
    }
}

/// Bytes an unprivileged writer may still use on the disk holding `path`.
fn fs_free_space(path: &Path) -> Option<u64> {
    statvfs(path).map(|st| st.f_bavail * st.f_frsize)
}

fn fs_total_space(path: &Path) -> Option<u64> {
    statvfs(path).map(|st| st.f_blocks * st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::journal::{FileMeta, StagedState};
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "bucketfs-staging-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_second_daemon_is_refused_and_leftovers_are_removed() {
        let dir = temp_dir("lock");
        let (area, replay) = StagingArea::open(&dir, u64::MAX).unwrap();
        assert!(replay.staged.is_empty());
        let (kept, _) = area.create().unwrap();
        let (left, _) = area.create().unwrap();
        assert_ne!(kept, left);
        area.record(&Record::Staged(StagedState {
            id: kept,
            generation: 1,
            key: "k".into(),
            size: 0,
            base: None,
            base_valid: 0,
            dirty: vec![],
            meta: FileMeta::default(),
        }))
        .unwrap();
        match StagingArea::open(&dir, u64::MAX) {
            Err(StagingError::Busy { path }) => assert_eq!(path, dir),
            other => panic!("second open: {other:?}"),
        }
        drop(area);
        let (area, replay) = StagingArea::open(&dir, u64::MAX).unwrap();
        assert_eq!(replay.staged.len(), 1);
        assert!(dir.join("files").join(kept.to_string()).exists());
        assert!(!dir.join("files").join(left.to_string()).exists());
        // New ids never collide with the replayed one.
        assert!(area.create().unwrap().0 > kept);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_limit_gives_enospc_and_space_comes_back() {
        let dir = temp_dir("limit");
        let (area, _) = StagingArea::open(&dir, 1000).unwrap();
        assert_eq!(area.claim_space(600), Ok(()));
        assert_eq!(area.claim_space(600), Err(libc::ENOSPC));
        assert_eq!(area.staged_bytes(), 600);
        area.release_space(600);
        assert_eq!(area.claim_space(1000), Ok(()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
