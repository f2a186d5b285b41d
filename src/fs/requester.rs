//! Whether the process behind a FUSE request is being killed, so that a
//! read-only request waiting on a dead or hung server can be abandoned.
//!
//! The kernel lets a process killed while its request is with the daemon
//! go only once the daemon answers (FUSE has no other way to cancel what
//! the daemon already holds, and fuser answers INTERRUPT with ENOSYS). A
//! read stuck in the store's retries would keep a `kill -9`ed process
//! around for the whole retry budget, minutes with a long `read_timeout`.
//! So read-only requests that have waited for a while look at their
//! requester in `/proc` and, once SIGKILL is pending for it, are dropped:
//! their reply goes out as EIO, which only the dying process sees.

use std::time::Duration;

/// Requests faster than this never look at `/proc`.
const WATCH_AFTER: Duration = Duration::from_millis(500);

/// How often a waiting request looks again.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// Bit of SIGKILL in the pending-signal masks of `/proc/TID/status`.
const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);

/// Resolves once thread `tid` (a FUSE request's `pid`) is being killed or
/// gone; never for `tid` 0 (a request the kernel made on its own, or from
/// outside the daemon's pid namespace).
pub async fn killed(tid: u32) {
    if tid == 0 {
        return std::future::pending().await;
    }
    tokio::time::sleep(WATCH_AFTER).await;
    while !is_being_killed(tid) {
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// SIGKILL pending for the thread or its process, or the thread exiting or
/// gone.
pub fn is_being_killed(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => status_says_killed(&status),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn status_says_killed(status: &str) -> bool {
    status.lines().any(|line| {
        let Some((name, value)) = line.split_once(':') else {
            return false;
        };
        let value = value.trim();
        match name {
            "State" => value.starts_with('Z') || value.starts_with('X'),
            "SigPnd" | "ShdPnd" => {
                u64::from_str_radix(value, 16).is_ok_and(|mask| mask & SIGKILL_BIT != 0)
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_pending_or_a_zombie_means_killed() {
        let running = "Name:\tcat\nState:\tS (sleeping)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n";
        assert!(!status_says_killed(running));
        let term_only = running.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000004000");
        assert!(!status_says_killed(&term_only), "SIGTERM may be handled");
        let killed = running.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100");
        assert!(status_says_killed(&killed));
        let thread = running.replace("SigPnd:\t0000000000000000", "SigPnd:\t0000000000000100");
        assert!(status_says_killed(&thread));
        assert!(status_says_killed(
            &running.replace("S (sleeping)", "Z (zombie)")
        ));
        assert!(!is_being_killed(std::process::id()));
    }
}
