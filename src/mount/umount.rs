//! `bucketfs umount MOUNTPOINT`: unmounts and returns only once the daemon
//! has uploaded every staged byte and exited, so that `bucketfs umount &&
//! bucketfs mount` (or a systemd stop then start) never races the old
//! daemon's uploads.
//!
//! Steps:
//! 1. The mount's statistics attribute (fs/stats.rs) names the daemon's
//!    pid and its staging directory; a path that is not a bucketfs mount
//!    is refused before anything is unmounted.
//! 2. Unmount: umount2(2) as root, `fusermount3 -u` otherwise; `--lazy`
//!    detaches a busy mount (its open files are served until closed).
//! 3. Wait while the daemon holds its staging directory's lock (and while
//!    its pid lives, for read-only mounts), showing the files and bytes
//!    still uploading from its drain status (staging/handover.rs): a line
//!    redrawn in place on a terminal, a line every [`LOG_EVERY`] elsewhere.
//!
//! Subtle cases:
//! 1. **The pid may be reused** once the daemon is gone; the staging lock
//!    cannot be (flock dies with its holder), so where there is one it
//!    must be held too.
//! 2. **A drain stopped early** (a second signal to the daemon, or its
//!    death) leaves files staged: the command says so and exits non-zero;
//!    the next mount on the same cache directory uploads them.
//! 3. **The next holder.** A mount waiting on the same staging directory
//!    takes its lock as soon as the daemon lets go, so a held lock means
//!    "still running" only while the daemon's pid lives (a zombie does
//!    not) and the lock's note names no other holder.

use crate::fs::stats::{Stats, read_from_mount};
use crate::staging::handover::{is_held, read_drain_status, read_holder};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a non-terminal gets a progress line.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// How often the daemon is looked at.
const POLL: Duration = Duration::from_millis(100);

/// What to unmount and how.
pub struct UmountRequest {
    pub mount_point: PathBuf,
    pub lazy: bool,
    /// Give up waiting after this long (the uploads go on).
    pub timeout: Option<Duration>,
}

/// Runs `bucketfs umount`; `Err` is the one-line reason for a non-zero exit.
pub fn umount(req: &UmountRequest) -> Result<(), String> {
    let point = req
        .mount_point
        .canonicalize()
        .map_err(|e| format!("{}: {e}", req.mount_point.display()))?;
    let json = read_from_mount(&point)?;
    let stats: Stats = serde_json::from_str(&json)
        .map_err(|e| format!("{}: unreadable statistics ({e})", point.display()))?;
    let staging = stats.staging_dir.as_ref().map(PathBuf::from);
    unmount(&point, req.lazy)?;
    wait_for_daemon(stats.pid, staging.as_deref(), req.timeout)
}

/// Step 2.
fn unmount(point: &Path, lazy: bool) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(point.as_os_str().as_bytes())
            .map_err(|_| "the path holds a NUL byte".to_string())?;
        let flags = if lazy { libc::MNT_DETACH } else { 0 };
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), flags) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => format!(
                    "{} is busy (files are open on it); close them, or use --lazy",
                    point.display()
                ),
                _ => format!("cannot unmount {}: {e}", point.display()),
            });
        }
        return Ok(());
    }
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg(if lazy { "-uz" } else { "-u" }).arg(point);
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run fusermount3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot unmount {}: {}",
            point.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether `pid` runs. A zombie does not: it has exited and let go of its
/// locks, and only waits for its parent to reap it (a daemon started from
/// a script or a test may wait a long time).
fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// From `/proc/PID/stat`: the state letter follows the `)` that closes the
/// command name (which may itself hold spaces and parentheses).
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Step 3.
fn wait_for_daemon(
    pid: u32,
    staging: Option<&Path>,
    timeout: Option<Duration>,
) -> Result<(), String> {
    let start = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last_line: Option<(Instant, String)> = None;
    // The lock alone does not say who holds it: a mount that waited for
    // this daemon takes it the moment it is free (subtle case 3).
    let running = || match staging {
        Some(dir) => {
            is_held(dir) && pid_alive(pid) && read_holder(dir).is_none_or(|h| h.pid == pid)
        }
        None => pid > 0 && pid_alive(pid),
    };
    while running() {
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Err(format!(
                "gave up waiting after {} s; bucketfs process {pid} goes on uploading",
                start.elapsed().as_secs()
            ));
        }
        if let Some(dir) = staging
            && let Some(status) = read_drain_status(dir)
        {
            let line = format!("bucketfs umount: uploading {} ...", status.describe());
            let due = match &last_line {
                None => true,
                Some((at, was)) => {
                    if terminal {
                        *was != line
                    } else {
                        at.elapsed() >= LOG_EVERY
                    }
                }
            };
            if due {
                let mut err = std::io::stderr();
                if terminal {
                    let _ = write!(err, "\r\x1b[K{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
                last_line = Some((Instant::now(), line));
            }
        }
        std::thread::sleep(POLL);
    }
    if terminal && last_line.is_some() {
        eprintln!();
    }
    if let Some(dir) = staging
        && let Some(left) = read_drain_status(dir).filter(|s| s.files > 0 && s.pid == pid)
    {
        return Err(format!(
            "bucketfs process {pid} stopped with {} still staged in {}; the next mount on this cache directory uploads them",
            left.describe(),
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_unreaped_child_is_not_alive() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !pid_alive(pid),
            "a zombie holds no lock and uploads nothing"
        );
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
