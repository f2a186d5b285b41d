//! Handing a staging directory from one daemon to the next, so that
//! `umount && mount` works: the old daemon goes on uploading after the
//! kernel has unmounted it, and the new one waits for it instead of
//! failing on the directory's lock.
//!
//! What the holder of `DIR/lock` leaves for others to read:
//! * in `DIR/lock` itself, a [`Holder`] line: its pid and the mount point
//!   it serves, written once it is mounted;
//! * in `DIR/draining`, while it drains at unmount, a [`DrainStatus`]:
//!   files and bytes still to upload, rewritten as they go down, removed
//!   when the drain ends.
//!
//! Subtle cases:
//! 1. **Waiting or refusing.** A daemon whose mount point is still mounted
//!    is serving it: a second mount of the same source would wait forever,
//!    so it is refused at once (the old message, with the pid and the
//!    mount point). A holder that is not mounted (unmounting, lazily
//!    unmounted with files still open, or still starting up) is waited
//!    for, with what it still has to upload reported every
//!    [`REPORT_EVERY`].
//! 2. **No stale word.** flock is released by the kernel when its holder
//!    dies, so a held lock always means a live holder; the files beside it
//!    are only read for the report and never decide anything alone.

use super::{StagingArea, StagingError};
use crate::staging::journal::Replay;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting mount says what it waits for.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// How often the lock is tried while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Who holds a staging directory (the contents of `DIR/lock`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The mount point it serves, once mounted.
    pub mount_point: Option<PathBuf>,
}

/// What a draining daemon still has to upload (`DIR/draining`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub pid: u32,
    pub files: u64,
    pub bytes: u64,
}

impl DrainStatus {
    /// "3 file(s), 12.0 MiB".
    pub fn describe(&self) -> String {
        format!(
            "{} file(s), {:.1} MiB",
            self.files,
            self.bytes as f64 / (1 << 20) as f64
        )
    }
}

/// The holder of `dir`, as it described itself.
pub fn read_holder(dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(dir.join("lock")).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// The drain status of `dir`'s holder, if it is draining.
pub fn read_drain_status(dir: &Path) -> Option<DrainStatus> {
    let text = std::fs::read_to_string(dir.join("draining")).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// Opens `dir` like [`StagingArea::open`], waiting for a daemon that holds
/// it but no longer serves a mount (subtle case 1); `report` gets a line
/// now and then while it waits. `is_mounted` tells whether a path is a
/// mount point.
pub fn open_waiting(
    dir: &Path,
    limit: u64,
    is_mounted: &dyn Fn(&Path) -> bool,
    report: &mut dyn FnMut(&str),
) -> Result<(StagingArea, Replay), StagingError> {
    let mut last_report: Option<Instant> = None;
    loop {
        match StagingArea::open(dir, limit) {
            Err(StagingError::Busy { path }) => {
                let holder = read_holder(dir);
                if let Some(Holder {
                    pid,
                    mount_point: Some(point),
                }) = &holder
                    && is_mounted(point)
                {
                    return Err(StagingError::Serving {
                        path,
                        pid: *pid,
                        mount_point: point.clone(),
                    });
                }
                if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                    report(&waiting_message(dir, holder.as_ref()));
                    last_report = Some(Instant::now());
                }
                std::thread::sleep(POLL);
            }
            other => {
                if last_report.is_some() {
                    report("the previous bucketfs process is done; mounting");
                }
                return other;
            }
        }
    }
}

/// "waiting for bucketfs process 123 (unmounted from /mnt/b) to finish
/// uploading 3 file(s), 12.0 MiB staged in DIR".
fn waiting_message(dir: &Path, holder: Option<&Holder>) -> String {
    let who = match holder {
        Some(h) => match &h.mount_point {
            Some(p) => format!(
                "bucketfs process {} (unmounted from {})",
                h.pid,
                p.display()
            ),
            None => format!("bucketfs process {}", h.pid),
        },
        None => "the bucketfs process using it".to_string(),
    };
    match read_drain_status(dir) {
        Some(s) => format!(
            "waiting for {who} to finish uploading {} staged in {}",
            s.describe(),
            dir.display()
        ),
        None => format!("waiting for {who} to release {}", dir.display()),
    }
}

/// Whether some process holds `dir`'s lock now.
pub fn is_held(dir: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("lock"))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

impl StagingArea {
    /// Says who holds the directory, for a mount waiting on it (module
    /// doc): this process, serving `mount_point`.
    pub fn announce(&self, mount_point: &Path) {
        let holder = Holder {
            pid: std::process::id(),
            mount_point: Some(mount_point.to_path_buf()),
        };
        let line = serde_json::to_string(&holder).expect("a holder serializes");
        self.write_lock_note(&line);
    }

    /// Records what the drain at unmount still has to upload (`None`: the
    /// drain ended).
    pub fn set_drain_status(&self, status: Option<(u64, u64)>) {
        let path = self.dir.join("draining");
        match status {
            Some((files, bytes)) => {
                let status = DrainStatus {
                    pid: std::process::id(),
                    files,
                    bytes,
                };
                let tmp = self.dir.join("draining.tmp");
                let text = serde_json::to_string(&status).expect("a status serializes");
                // Written aside and renamed: a reader never sees half a line.
                if std::fs::write(&tmp, text + "\n").is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
