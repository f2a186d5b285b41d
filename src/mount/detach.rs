//! Detaching: `bucketfs mount` without `-f` starts itself again in the
//! foreground as a new session (no terminal), waits until that child says
//! the mount is ready or why it failed, and exits accordingly.
//!
//! Subtle cases:
//! 1. **Re-exec, not fork.** Forking a process that already runs Tokio and
//!    reqwest threads leaves locks held by threads that do not exist in the
//!    child; starting the binary again avoids all of that. The child gets
//!    the same arguments plus `-f` and the same environment (credentials
//!    included: the environment, unlike the arguments, is private to the
//!    user).
//! 2. **One pipe carries the verdict.** The child writes `ready` or
//!    `error <message>` to the file descriptor named by
//!    [`READY_FD_ENV`]; the parent prints the message and exits non-zero.
//!    Before it, `wait <message>` lines say what the child waits for (an
//!    earlier daemon still uploading, staging/handover.rs); the parent
//!    prints them on its stderr as they come.
//!    A child that dies without a word (killed, crashed) closes the pipe,
//!    and the parent reports its exit status instead of hanging.
//! 3. **The child's output goes to /dev/null** once detached; it logs to
//!    the journal or to `log_file=` instead (main.rs), and everything
//!    before readiness reaches the user through the pipe.

use crate::mount::run::Readiness;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Environment variable naming the readiness descriptor in the child.
pub const READY_FD_ENV: &str = "BUCKETFS_READY_FD";

/// The descriptor number the child finds the pipe at.
const CHILD_READY_FD: i32 = 3;

/// Runs `args` (this program's arguments, `-f` appended) as a detached
/// child and waits for its verdict. `Ok` once the mount is ready.
pub fn spawn_detached(args: &[OsString]) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let write_fd = writer.as_raw_fd();
    let mut command = Command::new(exe);
    command
        .args(args)
        .arg("-f")
        .env(READY_FD_ENV, CHILD_READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, setsid) run between fork
    // and exec, on descriptors that are valid in the child.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(write_fd, CHILD_READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the mount process: {e}"))?;
    // Our copy of the write end must go, or EOF never comes.
    drop(writer);
    // `wait` lines are progress for the user (subtle case 2); the last
    // line is the verdict.
    let mut verdict = String::new();
    for line in std::io::BufReader::new(&mut reader).lines() {
        let Ok(line) = line else { break };
        match line.strip_prefix("wait ") {
            Some(message) => eprintln!("bucketfs: {message}"),
            None => verdict = line,
        }
    }
    let verdict = verdict.trim();
    if verdict == "ready" {
        return Ok(());
    }
    if let Some(message) = verdict.strip_prefix("error ") {
        let _ = child.wait();
        return Err(message.to_string());
    }
    let status = child
        .wait()
        .map(|s| s.to_string())
        .unwrap_or_else(|e| e.to_string());
    Err(format!(
        "the mount process ended before the mount was ready ({status})"
    ))
}

/// The child's end: reports readiness or failure through the pipe named
/// by [`READY_FD_ENV`].
pub struct ReadyPipe {
    pipe: Option<File>,
}

impl ReadyPipe {
    /// The pipe this process was started with, if any. Removes the
    /// variable so that processes started later do not inherit it.
    pub fn from_env() -> Option<ReadyPipe> {
        let fd: i32 = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
        // SAFETY: the variable is only set by `spawn_detached`, which put
        // the pipe at this descriptor; nothing else in this process owns it.
        // Edition 2024 marks env mutation unsafe: this runs before any
        // thread is started.
        unsafe { std::env::remove_var(READY_FD_ENV) };
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return None;
        }
        // SAFETY: see above; the descriptor is open (checked just now).
        let pipe = unsafe { File::from_raw_fd(fd) };
        Some(ReadyPipe { pipe: Some(pipe) })
    }

    /// Sends the verdict; nothing is sent after it.
    fn send(&mut self, line: &str) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

impl Readiness for ReadyPipe {
    fn ready(&mut self, _mount_point: &Path) {
        self.send("ready\n");
    }

    fn failed(&mut self, message: &str) {
        self.send(&format!("error {message}\n"));
    }

    fn waiting(&mut self, message: &str) {
        tracing::info!("{message}");
        if let Some(pipe) = &mut self.pipe {
            let _ = pipe.write_all(format!("wait {message}\n").as_bytes());
        }
    }
}
