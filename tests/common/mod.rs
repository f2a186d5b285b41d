//! Shared by the test binaries that mount for real (`mount.rs`, `write.rs`):
//! the in-process emulator ([`Emu`]), mount guards ([`Mount`]) that always
//! unmount and clean up, and data helpers. Each binary uses a part of it.
#![allow(dead_code)]

use bucketfs::emulator::handler::BucketSpec;
use bucketfs::emulator::{self, EmulatorConfig, RunningEmulator};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::memory::MemoryStore;
use bucketfs::store::{ObjectAttributes, ObjectStore, Provider, PutRequest};
use bytes::Bytes;
use md5::{Digest, Md5};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const AK: &str = "mount-test-ak";
pub const SK: &str = "mount-test-secret-Zq9xK2";
pub const MIB: usize = 1 << 20;
/// Owner the mounts give objects without metadata (`uid=`/`gid=` options).
pub const DEFAULT_UID: u32 = 4321;
pub const DEFAULT_GID: u32 = 8765;
/// How long a mount may take to appear or a process to end.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Every credentials variable any provider reads (src/mount/config.rs,
/// `env_sets`): removed from each mount's environment, then the provider's
/// own pair is set.
pub const CREDENTIAL_VARS: [&str; 21] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "OSS_SESSION_TOKEN",
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
    "OBS_ACCESS_KEY_ID",
    "OBS_SECRET_ACCESS_KEY",
    "OBS_SECURITY_TOKEN",
    "HUAWEICLOUD_SDK_AK",
    "HUAWEICLOUD_SDK_SK",
    "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "COS_SECRET_ID",
    "COS_SECRET_KEY",
    "COS_SESSION_TOKEN",
    "TENCENTCLOUD_SECRET_ID",
    "TENCENTCLOUD_SECRET_KEY",
    "TENCENTCLOUD_SESSION_TOKEN",
];

pub fn credential_vars(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        Provider::S3 => ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        Provider::Oss => ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"),
        Provider::Obs => ("OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY"),
        Provider::Cos => ("COS_SECRET_ID", "COS_SECRET_KEY"),
    }
}

/// COS bucket names carry the APPID.
pub fn bucket_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Cos => "bucket-1250000000",
        _ => "bucket",
    }
}

// ---------------------------------------------------------------------------
// The emulator

/// An emulator serving one bucket, on its own runtime. Dropped after the
/// mounts of a test (declare mounts after it), the server first.
pub struct Emu {
    pub emu: RunningEmulator,
    pub rt: tokio::runtime::Runtime,
    pub provider: Provider,
}

impl Emu {
    pub fn start(provider: Provider) -> Emu {
        Emu::start_bucket(provider, "")
    }

    /// An emulator whose bucket has a type: `kind` is `hns` (OSS
    /// hierarchical namespace) or `pfs` (OBS parallel file system).
    pub fn start_bucket(provider: Provider, kind: &str) -> Emu {
        let spec = match kind {
            "" => bucket_name(provider).to_string(),
            kind => format!("{}:{kind}", bucket_name(provider)),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let emu = rt
            .block_on(emulator::start(EmulatorConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                provider,
                buckets: vec![BucketSpec::parse(&spec).unwrap()],
                credentials: Credentials::new(AK, SK),
                faults: Vec::new(),
                seed: 1,
                data_dir: None,
            }))
            .expect("emulator starts on a free port");
        Emu { emu, rt, provider }
    }

    pub fn store(&self) -> &MemoryStore {
        &self.emu.emulator.stores()[bucket_name(self.provider)]
    }

    /// Stores `body` under `key` with user metadata (names without prefix),
    /// straight into the bucket, no HTTP.
    pub fn put(&self, key: &str, body: impl Into<Bytes>, metadata: &[(&str, &str)]) {
        let mut attributes = ObjectAttributes::default();
        for (name, value) in metadata {
            attributes
                .metadata
                .insert(name.to_string(), value.to_string());
        }
        let req = PutRequest {
            key: key.into(),
            body: body.into(),
            attributes,
        };
        self.rt
            .block_on(self.store().put_object(&req))
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }

    /// A native symlink object (OSS, COS).
    pub fn put_symlink(&self, key: &str, target: &str) {
        self.rt
            .block_on(
                self.store()
                    .put_symlink(key, target, &ObjectAttributes::default()),
            )
            .unwrap_or_else(|e| panic!("symlink {key:?}: {e}"));
    }

    /// Requests counted by the emulator for `operation` since the last reset.
    pub fn requests(&self, operation: &str) -> u64 {
        self.emu
            .emulator
            .stats
            .snapshot()
            .get(operation)
            .map_or(0, |c| c.requests)
    }

    pub fn reset_stats(&self) {
        self.emu.emulator.stats.reset();
    }

    pub fn source(&self, prefix: &str) -> String {
        let bucket = bucket_name(self.provider);
        match prefix {
            "" => format!("{}://{bucket}", self.provider.name()),
            _ => format!("{}://{bucket}/{prefix}", self.provider.name()),
        }
    }

    /// `bucketfs mount SOURCE POINT -o endpoint=...,region=local,OPTIONS`
    /// with this provider's credentials (and no other) in the environment.
    /// Later options win, so `options` may override the endpoint.
    pub fn command(&self, source: &str, point: &Path, options: &[&str]) -> Command {
        let mut all = vec![format!("endpoint={}", self.emu.url), "region=local".into()];
        // Staging next to the mount point, removed with it.
        if let Some(base) = point.parent() {
            all.push(format!("cache_dir={}", base.join("cache").display()));
        }
        all.extend(options.iter().map(|o| o.to_string()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
        cmd.arg("mount")
            .arg(source)
            .arg(point)
            .arg("-o")
            .arg(all.join(","))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for var in CREDENTIAL_VARS {
            cmd.env_remove(var);
        }
        let (id, secret) = credential_vars(self.provider);
        cmd.env(id, AK).env(secret, SK);
        cmd
    }

    /// Mounts `prefix` with `-f` and waits until the mount is visible.
    pub fn mount(&self, prefix: &str, options: &[&str]) -> Mount {
        let mut m = Mount::new();
        let mut cmd = self.command(&self.source(prefix), &m.point, options);
        cmd.arg("-f").stderr(m.log_file());
        m.child = Some(cmd.spawn().expect("bucketfs starts"));
        m.wait_mounted();
        m
    }
}

// ---------------------------------------------------------------------------
// Mounts

/// A mount point in a fresh temporary directory (`BASE/mnt`, the process's
/// stderr in `BASE/stderr`). On drop: SIGTERM to the foreground process,
/// lazy unmount if still mounted, kill what is left, remove the directory.
pub struct Mount {
    pub base: PathBuf,
    /// Absolute, as `/proc/self/mountinfo` shows it.
    pub point: PathBuf,
    /// The `-f` process, if this test started one.
    pub child: Option<Child>,
}

impl Mount {
    pub fn new() -> Mount {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base =
            std::env::temp_dir().join(format!("bucketfs-mount-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("mnt")).expect("temp dir");
        let point = base.join("mnt").canonicalize().expect("canonical path");
        Mount {
            base,
            point,
            child: None,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.point.join(rel)
    }

    pub fn log_file(&self) -> File {
        File::create(self.base.join("stderr")).expect("log file")
    }

    /// What the mount process wrote to stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.base.join("stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("a foreground mount").id() as i32
    }

    pub fn wait_mounted(&mut self) {
        let start = Instant::now();
        while !is_mounted(&self.point) {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "bucketfs mount exited ({status}) before mounting {}:\n{}",
                    self.point.display(),
                    self.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} not mounted after {DEADLINE:?}:\n{}",
                self.point.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the foreground process to end and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("a foreground mount");
        let status = wait_with_deadline(child, DEADLINE);
        status.unwrap_or_else(|| panic!("bucketfs did not exit:\n{}", self.log()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            signal(child.id() as i32, libc::SIGTERM);
            wait_with_deadline(child, Duration::from_secs(10));
        }
        if is_mounted(&self.point) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.point)
                .stderr(Stdio::null())
                .status();
        }
        if is_mounted(&self.point) {
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Detached mounts: the daemon the test's command started.
        for pid in mount_processes(&self.point) {
            signal(pid, libc::SIGKILL);
        }
        if is_mounted(&self.point) {
            eprintln!("{} is still mounted; left in place", self.point.display());
        } else {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid this test started; no memory is involved.
    unsafe { libc::kill(pid, sig) };
}

pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` until it holds or [`DEADLINE`] passes.
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_within(what, DEADLINE, done);
}

/// Polls `done` until it holds or `deadline` passes.
pub fn wait_until_within(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `point` is a mount point now (field 5 of mountinfo; our paths
/// have no characters mountinfo escapes).
pub fn is_mounted(point: &Path) -> bool {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == point)
}

/// Processes other than this one with `point` among their arguments: the
/// mount daemons of that mount point (the paths are unique to one test).
pub fn mount_processes(point: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let wanted = point.as_os_str().as_encoded_bytes();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// Runs a mount command that is expected to exit on its own (detached mode
/// or a failure) and returns its status and stderr (kept in `scratch`'s
/// directory, apart from the log of a foreground process mounted there).
pub fn run(mut cmd: Command, scratch: &Mount) -> (ExitStatus, String) {
    let log = scratch.base.join("run-stderr");
    let file = File::create(&log).expect("log file");
    let mut child = cmd.stderr(file).spawn().expect("bucketfs starts");
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    let stderr = fs::read_to_string(&log).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("bucketfs mount did not return:\n{stderr}");
    };
    (status, stderr)
}

// ---------------------------------------------------------------------------
// Data

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    fastrand::Rng::with_seed(seed).fill(&mut data);
    data
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// md5 of a file read through the mount, 1 MiB at a time.
pub fn md5_of_file(path: &Path) -> String {
    let mut file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; MIB];
    loop {
        let n = file
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

pub fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

pub fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
