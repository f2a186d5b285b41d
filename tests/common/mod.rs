//! Shared by the test binaries that mount for real (`mount.rs`, `write.rs`,
//! `service.rs`): the store under test ([`Emu`]: the in-process emulator,
//! or a Garage selected with `BUCKETFS_TEST_BACKEND=garage`, see
//! `tests/garage/run.sh`), mount guards ([`Mount`]) that always unmount and
//! clean up, and data helpers. Each binary uses a part of it.
//!
//! No test passes without running. Tests that need what only the emulator
//! has (request counters, fault injection, the OSS/OBS/COS dialects, native
//! rename and PFS buckets) live in `emulator_only` modules, which the
//! Garage run filters out, so its counts show them as filtered out; under
//! Garage they fail. Tests that need root are `#[ignore]`d with the reason
//! (`.ci/run`, as root, runs them with `--include-ignored`) and fail when
//! run as another user.
#![allow(dead_code)]

use bucketfs::emulator::handler::BucketSpec;
use bucketfs::emulator::{self, EmulatorConfig, RunningEmulator};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::memory::MemoryStore;
use bucketfs::store::{
    Dialect, GetRequest, ObjectAttributes, ObjectStore, Provider, PutRequest, StoreError,
};
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
// The store under test: the emulator, or Garage

/// A Garage to run against, from the environment the helper script
/// `tests/garage/run.sh` sets (`BUCKETFS_TEST_BACKEND=garage`).
#[derive(Clone, Debug)]
pub struct GarageEnv {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
}

/// The Garage the tests run against, if one is selected.
pub fn garage_env() -> Option<GarageEnv> {
    if std::env::var("BUCKETFS_TEST_BACKEND").ok()?.as_str() != "garage" {
        return None;
    }
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("BUCKETFS_TEST_BACKEND=garage needs {name} (see tests/garage/run.sh)")
        })
    };
    Some(GarageEnv {
        endpoint: var("BUCKETFS_GARAGE_ENDPOINT"),
        region: var("BUCKETFS_GARAGE_REGION"),
        bucket: var("BUCKETFS_GARAGE_BUCKET"),
        key_id: var("BUCKETFS_GARAGE_KEY_ID"),
        secret: var("BUCKETFS_GARAGE_SECRET"),
    })
}

/// Under Garage, a test that needs what only the emulator has is a bug in
/// the test's placement, not a pass: tests/garage/run.sh filters out the
/// `emulator_only` modules, so reaching here means the test sits outside one.
fn needs_the_emulator(needs: &str) -> ! {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    panic!(
        "{test} cannot run against Garage ({needs}): put it in an `emulator_only` module, \
         which tests/garage/run.sh filters out"
    );
}

/// The reason root-only tests give in `#[ignore = ...]`, checked on entry.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("{what} needs root: run the test as root, or leave out --ignored");
    }
}

enum Backend {
    Emulator(RunningEmulator),
    /// Garage, with a client and this test's own key prefix.
    Garage {
        env: GarageEnv,
        client: Box<HttpStore>,
        prefix: String,
    },
}

/// The bucket a test works in: the in-process emulator's (one per test, on
/// its own runtime; declare mounts after it, so it outlives them), or a
/// prefix of its own in the Garage bucket.
pub struct Emu {
    backend: Backend,
    pub rt: tokio::runtime::Runtime,
    pub provider: Provider,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

impl Emu {
    /// The store under test for `provider`: Garage when selected (S3 only),
    /// else the emulator.
    pub fn start(provider: Provider) -> Emu {
        match garage_env() {
            None => Emu::emulator_bucket(provider, ""),
            Some(_) if provider != Provider::S3 => needs_the_emulator(&format!(
                "Garage speaks S3, not the {} dialect",
                provider.name()
            )),
            Some(env) => Emu::garage(env),
        }
    }

    /// The emulator only: `needs` says what Garage lacks for this test.
    pub fn emulator(provider: Provider, needs: &str) -> Emu {
        if garage_env().is_some() {
            needs_the_emulator(needs);
        }
        Emu::emulator_bucket(provider, "")
    }

    /// An emulator bucket with a type: `kind` is `hns` (OSS hierarchical
    /// namespace) or `pfs` (OBS parallel file system). Emulator only.
    pub fn start_bucket(provider: Provider, kind: &str) -> Emu {
        if garage_env().is_some() {
            needs_the_emulator(
                "Garage has no native rename, hierarchical namespace or PFS buckets",
            );
        }
        Emu::emulator_bucket(provider, kind)
    }

    fn emulator_bucket(provider: Provider, kind: &str) -> Emu {
        let spec = match kind {
            "" => bucket_name(provider).to_string(),
            kind => format!("{}:{kind}", bucket_name(provider)),
        };
        let rt = runtime();
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
        Emu {
            backend: Backend::Emulator(emu),
            rt,
            provider,
        }
    }

    fn garage(env: GarageEnv) -> Emu {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "t{}-{}-{}/",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut config = HttpStoreConfig::new(
            &env.endpoint,
            &env.bucket,
            Dialect::new(Provider::S3),
            Credentials::new(env.key_id.clone(), env.secret.clone()),
        );
        config.path_style = true;
        config.region = env.region.clone();
        let client = Box::new(HttpStore::new(config).expect("a client for Garage"));
        Emu {
            backend: Backend::Garage {
                env,
                client,
                prefix,
            },
            rt: runtime(),
            provider: Provider::S3,
        }
    }

    /// Whether this is the emulator (request counters, faults, raw access).
    pub fn is_emulator(&self) -> bool {
        matches!(self.backend, Backend::Emulator(_))
    }

    fn emulator_only(&self) -> &RunningEmulator {
        match &self.backend {
            Backend::Emulator(e) => e,
            Backend::Garage { .. } => panic!("this check needs the emulator"),
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Emulator(e) => e.url.clone(),
            Backend::Garage { env, .. } => env.endpoint.clone(),
        }
    }

    /// The emulator's fault rules (emulator only).
    pub fn faults(&self) -> &bucketfs::emulator::faults::Faults {
        &self.emulator_only().faults
    }

    /// The emulator's counters (emulator only).
    pub fn stats(
        &self,
    ) -> std::collections::BTreeMap<&'static str, bucketfs::emulator::stats::Counter> {
        self.emulator_only().emulator.stats.snapshot()
    }

    /// The emulator's bucket, for direct access (emulator only).
    pub fn store(&self) -> &MemoryStore {
        &self.emulator_only().emulator.stores()[bucket_name(self.provider)]
    }

    /// The secret key mounts sign with.
    pub fn secret(&self) -> String {
        match &self.backend {
            Backend::Emulator(_) => SK.to_string(),
            Backend::Garage { env, .. } => env.secret.clone(),
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> String {
        match &self.backend {
            Backend::Emulator(_) => bucket_name(self.provider).to_string(),
            Backend::Garage { env, .. } => env.bucket.clone(),
        }
    }

    /// The full key of this test's `key`.
    fn full_key(&self, key: &str) -> String {
        match &self.backend {
            Backend::Emulator(_) => key.to_string(),
            Backend::Garage { prefix, .. } => format!("{prefix}{key}"),
        }
    }

    fn client(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::Emulator(_) => self.store(),
            Backend::Garage { client, .. } => client.as_ref(),
        }
    }

    /// Stores `body` under `key` with user metadata (names without prefix).
    pub fn put(&self, key: &str, body: impl Into<Bytes>, metadata: &[(&str, &str)]) {
        let mut attributes = ObjectAttributes::default();
        for (name, value) in metadata {
            attributes
                .metadata
                .insert(name.to_string(), value.to_string());
        }
        let req = PutRequest {
            key: self.full_key(key),
            body: body.into(),
            attributes,
        };
        self.rt
            .block_on(self.client().put_object(&req))
            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }

    /// The body of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Backend::Emulator(_) = &self.backend {
            return self.store().export_object(key).map(|o| o.body.to_vec());
        }
        // The client takes a whole body without a range only when it is
        // small; some servers refuse a range of an empty object: HEAD
        // tells which to ask for.
        let client = self.client();
        let size = match self.rt.block_on(client.head_object(&self.full_key(key))) {
            Ok(meta) => meta.size,
            Err(StoreError::NoSuchKey { .. }) => return None,
            Err(e) => panic!("HEAD {key:?}: {e}"),
        };
        let req = GetRequest {
            key: self.full_key(key),
            range: (size > 0).then_some(0..size),
            if_match: None,
        };
        match self.rt.block_on(client.get_object(&req)) {
            Ok(got) => Some(got.body.to_vec()),
            Err(StoreError::NoSuchKey { .. }) => None,
            Err(e) => panic!("GET {key:?}: {e}"),
        }
    }

    /// A native symlink object (OSS, COS; emulator only).
    pub fn put_symlink(&self, key: &str, target: &str) {
        self.rt
            .block_on(
                self.store()
                    .put_symlink(key, target, &ObjectAttributes::default()),
            )
            .unwrap_or_else(|e| panic!("symlink {key:?}: {e}"));
    }

    /// Requests counted by the emulator for `operation` since the last reset
    /// (emulator only).
    pub fn requests(&self, operation: &str) -> u64 {
        self.stats().get(operation).map_or(0, |c| c.requests)
    }

    /// Zeroes the emulator's counters (nothing to do on Garage).
    pub fn reset_stats(&self) {
        if let Backend::Emulator(e) = &self.backend {
            e.emulator.stats.reset();
        }
    }

    pub fn source(&self, prefix: &str) -> String {
        let bucket = self.bucket();
        let full = self.full_key(prefix);
        match full.as_str() {
            "" => format!("{}://{bucket}", self.provider.name()),
            _ => format!("{}://{bucket}/{full}", self.provider.name()),
        }
    }

    /// `bucketfs mount SOURCE POINT -o endpoint=...,region=...,OPTIONS`
    /// with this store's credentials (and no other) in the environment.
    /// Later options win, so `options` may override the endpoint.
    pub fn command(&self, source: &str, point: &Path, options: &[&str]) -> Command {
        let region = match &self.backend {
            Backend::Emulator(_) => "local".to_string(),
            Backend::Garage { env, .. } => env.region.clone(),
        };
        let mut all = vec![
            format!("endpoint={}", self.url()),
            format!("region={region}"),
        ];
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
            .env(
                "RUST_LOG",
                std::env::var("BUCKETFS_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for var in CREDENTIAL_VARS {
            cmd.env_remove(var);
        }
        let (id_var, secret_var) = credential_vars(self.provider);
        let id = match &self.backend {
            Backend::Emulator(_) => AK.to_string(),
            Backend::Garage { env, .. } => env.key_id.clone(),
        };
        cmd.env(id_var, id).env(secret_var, self.secret());
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
            detach(&self.point);
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

/// `fusermount3 -u -z POINT`: detaches a mount, a dead one included (its
/// daemon killed), without waiting for its users.
pub fn detach(point: &Path) {
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(point)
        .stderr(Stdio::null())
        .status();
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
