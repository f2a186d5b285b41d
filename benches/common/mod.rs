//! Settings and helpers shared by the benchmarks.
//!
//! `cargo bench` runs a `harness = false` bench with `--bench`; `cargo test
//! --all-targets` (CI) runs the same binary without it. Without `--bench`
//! a benchmark runs as a *smoke test*: small sizes, one round, the same
//! correctness checks, so CI proves the bench still works without spending
//! minutes on figures nobody reads.

// Each bench compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use bucketfs::mount::mountpoint::is_mount_point;
use bucketfs::store::{GetRequest, ObjectStore};
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long a mount may take to appear or go away.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(30);

/// Prefixes of the environment variables that carry credentials of any
/// provider: none of the bench's caller's may reach a mount.
pub const CREDENTIAL_ENV_PREFIXES: &[&str] = &[
    "AWS_",
    "OSS_",
    "ALIBABA_CLOUD_",
    "OBS_",
    "HUAWEICLOUD_",
    "COS_",
    "TENCENTCLOUD_",
    "RCLONE_",
];

/// True under `cargo bench`, false under `cargo test`.
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `name` from the environment as a number, else `bench_default` under
/// `cargo bench` and `smoke_default` under `cargo test`.
pub fn env_u64(name: &str, bench_default: u64, smoke_default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if is_bench_run() {
            bench_default
        } else {
            smoke_default
        })
}

/// `size` bytes in which every 8-byte word differs (splitmix64 of its
/// index), so a misplaced block cannot compare equal.
pub fn object_bytes(size: u64) -> Bytes {
    let mut data = vec![0u8; size as usize];
    for (i, word) in data.chunks_mut(8).enumerate() {
        let mut z = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        word.copy_from_slice(&z.to_le_bytes()[..word.len()]);
    }
    Bytes::from(data)
}

/// A scratch directory under the system temp dir, removed when dropped
/// (after making sure nothing is mounted on any of its mount points).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("bucketfs-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        let dir = dir.canonicalize().expect("canonical scratch directory");
        Scratch { dir }
    }

    /// A new empty directory `name` in the scratch directory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::create_dir_all(&path).expect("create a scratch subdirectory");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut still_mounted = false;
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if is_mount_point(&path) {
                lazy_unmount(&path);
                still_mounted |= is_mount_point(&path);
            }
        }
        if still_mounted {
            eprintln!("{} holds a mount still; left in place", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn lazy_unmount(mnt: &Path) {
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mnt)
        .stderr(Stdio::null())
        .status();
}

/// A FUSE daemon run in the foreground as a child, serving `mnt`;
/// unmounted (SIGTERM, then SIGKILL and a lazy `fusermount3 -u -z` if
/// needed) when dropped, so a failing bench leaves no mount behind.
pub struct MountedDaemon {
    pub child: Option<Child>,
    pub mnt: PathBuf,
    pub log: PathBuf,
}

impl MountedDaemon {
    /// Spawns `command` (its stderr to `log`, every credential variable of
    /// the caller removed, then `env` set) and waits until `mnt` is a
    /// mount point; the error holds the daemon's log.
    pub fn start(
        mut command: Command,
        mnt: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<MountedDaemon, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).map_err(|e| format!("mount log: {e}"))?);
        for (name, _) in std::env::vars_os() {
            let name_str = name.to_string_lossy();
            if CREDENTIAL_ENV_PREFIXES
                .iter()
                .any(|p| name_str.starts_with(p))
            {
                command.env_remove(&name);
            }
        }
        command.envs(env.iter().copied());
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let mut mount = MountedDaemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + MOUNT_DEADLINE;
        while !is_mount_point(&mount.mnt) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                mount.child = None;
                return Err(format!(
                    "the daemon exited ({status}) before mounting; its log:\n{}",
                    mount.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not mounted after {MOUNT_DEADLINE:?}; log:\n{}",
                    mount.mnt.display(),
                    mount.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(mount)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the daemon at once (SIGKILL): the kernel then fails every
    /// request still waiting on the mount, which unblocks a stuck reader.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        lazy_unmount(&self.mnt);
    }

    /// SIGTERMs the daemon, waits for it, and checks the mount is gone.
    pub fn unmount(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + MOUNT_DEADLINE;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        // 143: exited by SIGTERM's default (rclone).
                        if !status.success() && !matches!(status.code(), None | Some(143)) {
                            eprintln!("the daemon on {} exited with {status}", self.mnt.display());
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    _ => {
                        eprintln!("the daemon ignored SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if is_mount_point(&self.mnt) {
            // s3fs and rclone leave the unmounting to fusermount.
            lazy_unmount(&self.mnt);
        }
    }
}

impl Drop for MountedDaemon {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn own_cpu() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (user + system) process `pid` has used so far, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks).
pub fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: count from its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// Whether `program` is an executable file in a directory of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// A ranged GET of `key`, checked to return the whole range.
pub async fn ranged_get(store: &dyn ObjectStore, key: &str, range: std::ops::Range<u64>) -> Bytes {
    let got = store
        .get_object(&GetRequest {
            key: key.into(),
            range: Some(range.clone()),
            if_match: None,
        })
        .await
        .unwrap_or_else(|e| panic!("GET {key} {range:?}: {e}"));
    assert_eq!(
        got.body.len() as u64,
        range.end - range.start,
        "GET {key} {range:?}"
    );
    got.body
}

pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
