//! Running a mount: check the mount point, probe the bucket, start the FUSE
//! session, report readiness, and unmount cleanly on a signal.
//!
//! The steps, in order (each failure is one line, and nothing is mounted):
//! 1. the mount point is checked (mountpoint.rs);
//! 2. the bucket is probed with a one-key LIST of the mount prefix, whose
//!    XML error names the problem (NoSuchBucket, SignatureDoesNotMatch,
//!    InvalidAccessKeyId, AccessDenied), then HeadBucket for its type (OBS
//!    PFS, OSS hierarchical namespace); a HeadBucket the credentials may
//!    not call is logged and the dialect's defaults are kept;
//! 3. the FUSE session is created (mount + INIT handshake) and served by
//!    worker threads; only then is the mount reported ready;
//! 4. SIGTERM/SIGINT unmount (lazily if the mount is busy, so open files
//!    are still served until closed) and the process exits 0; an external
//!    `umount`/`fusermount3 -u` ends the session the same way.
//!
//! Subtle cases:
//! 1. The probe runs with two attempts, not the client's six: a wrong port
//!    must fail the mount in about a second, not after twenty.
//! 2. The probe's errors are reworded for a person at a terminal; the
//!    vendor's code and request ID stay in the line.

use crate::cache::block::BlockCache;
use crate::cache::disk::DiskCache;
use crate::cache::readahead::{DEFAULT_BLOCK_SIZE, ReadaheadConfig};
use crate::fs::filesystem::{BucketFs, FsConfig};
use crate::fs::fuse::FuseAdapter;
use crate::fs::namespace::AttrDefaults;
use crate::fs::write::upload::Uploader;
use crate::fs::write::{WriteConfig, Writes};
use crate::mount::config::{DEFAULT_DISK_CACHE_SIZE, MountConfig, show_size};
use crate::mount::mountpoint::check_mount_point;
use crate::staging::handover::open_waiting;
use crate::store::http::HttpStore;
use crate::store::retry::RetryPolicy;
use crate::store::{ListRequest, ObjectStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tracing::{info, warn};

/// Attempts of the mount-time probe (subtle case 1).
const PROBE_ATTEMPTS: u32 = 2;

/// Where readiness is reported: nowhere (plain foreground) or the pipe of
/// the `bucketfs mount` process waiting for its detached child.
pub trait Readiness {
    fn ready(&mut self, mount_point: &Path);
    fn failed(&mut self, message: &str);
    /// The mount waits for something (an earlier daemon's uploads).
    fn waiting(&mut self, message: &str);
}

/// Reports to the terminal only.
pub struct Terminal;

impl Readiness for Terminal {
    fn ready(&mut self, mount_point: &Path) {
        info!("mounted at {}", mount_point.display());
        // Under systemd (Type=notify): READY only now that the mount answers.
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&format!("mounted at {}", mount_point.display())),
        ]);
    }
    fn failed(&mut self, _message: &str) {}
    fn waiting(&mut self, message: &str) {
        info!("{message}");
        notify(&[sd_notify::NotifyState::Status(message)]);
    }
}

/// Tells systemd about the service's state; nothing when not started by
/// systemd (no NOTIFY_SOCKET).
fn notify(state: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// Mounts `config` at `mount_point` and serves it until unmounted.
/// Returns the one-line reason on failure.
pub fn run_mount(
    config: MountConfig,
    mount_point: &Path,
    readiness: &mut dyn Readiness,
) -> Result<(), String> {
    let result = mount_and_serve(config, mount_point, readiness);
    if let Err(message) = &result {
        readiness.failed(message);
    }
    result
}

fn mount_and_serve(
    config: MountConfig,
    mount_point: &Path,
    readiness: &mut dyn Readiness,
) -> Result<(), String> {
    let mount_point = check_mount_point(mount_point, config.options.nonempty)?;
    check_fuse_available()?;
    keep_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bucketfs-io")
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let mut signals = {
        let _context = runtime.enter();
        Signals::install()
    };

    // The staging directory before the probe: a second daemon on the same
    // directory fails at once (staging/mod.rs, subtle case 1).
    let staging = if config.options.read_only {
        None
    } else {
        let dir = config.staging_dir(&|name| std::env::var(name).ok());
        let limit = config.options.staging_max.unwrap_or(u64::MAX);
        // `umount && mount`: an earlier daemon still uploading from this
        // directory is waited for (staging/handover.rs).
        let (area, replay) = open_waiting(
            &dir,
            limit,
            &crate::mount::mountpoint::is_mount_point,
            &mut |message| readiness.waiting(message),
        )
        .map_err(|e| e.to_string())?;
        info!(
            "staging written data in {} ({} file(s) left by the previous run)",
            dir.display(),
            replay.staged.len()
        );
        Some((Arc::new(area), replay))
    };
    let http = Arc::new(runtime.block_on(probe(&config))?);
    if let Some(expires) = config.credentials_expire {
        runtime.spawn(renew_credentials(
            http.clone(),
            config.credential_source.clone(),
            expires,
        ));
    }
    let store: Arc<dyn ObjectStore> = http;
    let staging_area = staging.as_ref().map(|(area, _)| area.clone());
    let (writes, replay) = match staging {
        Some((area, replay)) => {
            let o = &config.options;
            let uploader = Uploader::new(
                store.clone(),
                area.clone(),
                o.part_size,
                o.upload_concurrency,
            );
            let config = WriteConfig {
                sync_close: o.sync_close,
            };
            (Some(Writes::new(area, uploader, config)), Some(replay))
        }
        None => (None, None),
    };
    let disk = match &config.options.disk_cache {
        None => None,
        Some(dir) => {
            let o = &config.options;
            let size = o.disk_cache_size.unwrap_or(DEFAULT_DISK_CACHE_SIZE);
            // Blocks waiting for their disk write: at most one readahead
            // window (disk.rs, subtle case 4).
            let disk = DiskCache::open(dir, size, o.readahead_max)
                .map_err(|e| format!("disk_cache={}: {e}", dir.display()))?;
            info!(
                "keeping up to {} of fetched blocks in {}",
                show_size(size),
                disk.dir().display()
            );
            Some(Arc::new(disk))
        }
    };
    let disk_cache = disk.clone();
    let fs = build_fs(&config, store, writes, disk);
    if let Some(replay) = replay {
        let _context = runtime.enter();
        fs.recover(replay);
    }

    let adapter = FuseAdapter::new(fs.clone(), runtime.handle().clone());
    let mut session = fuser::Session::new(adapter, &mount_point, &fuse_config(&config))
        .map_err(|e| mount_error(&mount_point, e))?;
    if let Some(area) = &staging_area {
        area.announce(&mount_point);
    }
    let mut unmounter = session.unmount_callable();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let serving = std::thread::Builder::new()
        .name("bucketfs-fuse".into())
        .spawn(move || {
            let result = session.run();
            let _ = done_tx.send(());
            result
        })
        .map_err(|e| format!("cannot start the FUSE session thread: {e}"))?;

    if config.options.kernel_cache {
        tune_kernel_readahead(&mount_point, config.options.readahead_max);
    }
    info!(
        "bucketfs: {} mounted at {} (endpoint {})",
        config.source,
        mount_point.display(),
        config.endpoint
    );
    readiness.ready(&mount_point);

    let signalled = runtime.block_on(async {
        tokio::select! {
            _ = done_rx => false,
            _ = signals.recv() => true,
        }
    });
    notify(&[sd_notify::NotifyState::Stopping]);
    if signalled {
        info!("signal received: unmounting {}", mount_point.display());
        if let Err(e) = unmounter.unmount() {
            warn!(
                "unmounting {} failed ({e}); detaching it lazily, open files are served until closed",
                mount_point.display()
            );
            lazy_unmount(&mount_point);
        }
    }
    let result = serving
        .join()
        .map_err(|_| "the FUSE session thread panicked".to_string())?;
    drain_uploads(&runtime, &fs, &mut signals);
    // Fetches still in flight hold the store; let them end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    // Not left to the last reference's drop: a task stopped by the
    // shutdown may still hold one.
    if let Some(disk) = disk_cache {
        disk.remove_dir();
    }
    match result {
        Ok(()) => {
            info!("unmounted {}", mount_point.display());
            Ok(())
        }
        Err(e) => Err(format!("the FUSE session ended with an error: {e}")),
    }
}

/// FUSE must be there before anything is mounted: `/dev/fuse`, and for a
/// user other than root the `fusermount3` helper.
fn check_fuse_available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err(
            "FUSE is not available: /dev/fuse is missing (load the module with `modprobe fuse`; in a container, pass /dev/fuse in)"
                .to_string(),
        );
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !in_path("fusermount3") {
        return Err(
            "fusermount3 is not installed, and users other than root need it to mount: install the fuse3 package (apt-get install fuse3)"
                .to_string(),
        );
    }
    Ok(())
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Renews temporary credentials before they expire, for as long as the
/// mount lives (credentials.rs, subtle case 5). A failed renewal is logged
/// and retried; the old credentials stay in use meanwhile.
async fn renew_credentials(
    store: Arc<HttpStore>,
    source: crate::mount::credentials::CredentialSource,
    mut expires: SystemTime,
) {
    const RETRY: std::time::Duration = std::time::Duration::from_secs(30);
    loop {
        let wait = crate::mount::credentials::refresh_due(expires, SystemTime::now());
        tokio::time::sleep(wait).await;
        let source = source.clone();
        let renewed = tokio::task::spawn_blocking(move || {
            crate::mount::credentials::renew(&source, &|name| std::env::var(name).ok())
        })
        .await;
        match renewed {
            Ok(Ok(found)) => {
                store.set_credentials(found.credentials);
                match found.expires {
                    Some(next) => {
                        info!("credentials renewed from {}", found.source);
                        expires = next;
                    }
                    None => {
                        info!(
                            "credentials renewed from {}; they do not expire",
                            found.source
                        );
                        return;
                    }
                }
            }
            Ok(Err(e)) => {
                warn!(
                    "cannot renew the credentials ({e}); trying again in {}s",
                    RETRY.as_secs()
                );
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => {
                warn!(
                    "the credential renewal task failed ({e}); trying again in {}s",
                    RETRY.as_secs()
                );
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Waits for every staged upload before the process ends (unmount waits
/// for pending uploads); a second SIGTERM/SIGINT stops waiting, leaving the
/// data staged for the next mount on the same cache directory.
fn drain_uploads(runtime: &tokio::runtime::Runtime, fs: &Arc<BucketFs>, signals: &mut Signals) {
    runtime.block_on(async {
        tokio::select! {
            _ = fs.drain() => {}
            _ = signals.recv() => {
                warn!("stopped waiting for uploads; they stay staged and resume at the next mount");
            }
        }
    });
}

/// SIGTERM and SIGINT, caught from before the mount exists to the end, so
/// a signal arriving right after READY unmounts cleanly instead of killing
/// the process with the mount still in place.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (inside the runtime's context).
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT (also one that came while nobody waited).
    async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
        }
    }
}

/// Makes glibc keep freed part buffers for reuse instead of returning them
/// to the kernel. The read path allocates and frees megabyte buffers at
/// network speed; by default each comes from a fresh `mmap`, and the page
/// faults that zero it cost about a third of the CPU of a cold sequential
/// read (measured with `perf`, README "Read performance").
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's ceiling for the mmap threshold on 64-bit (32 MiB): parts
        /// up to that size come from the heap and are reused.
        const MMAP_THRESHOLD: i32 = 32 << 20;
        /// Free memory kept at the top of a heap before trimming it.
        const TRIM_THRESHOLD: i32 = 256 << 20;
        // SAFETY: mallopt only changes allocator tuning; it is called before
        // any thread that allocates concurrently is started.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// The filesystem core over `store`, tuned by the mount options.
fn build_fs(
    config: &MountConfig,
    store: Arc<dyn ObjectStore>,
    writes: Option<Writes>,
    disk: Option<Arc<DiskCache>>,
) -> Arc<BucketFs> {
    let o = &config.options;
    let mut blocks = BlockCache::new(o.cache_size, DEFAULT_BLOCK_SIZE);
    if let Some(disk) = disk {
        blocks = blocks.with_disk(disk);
    }
    let blocks = Arc::new(blocks);
    let readahead = ReadaheadConfig {
        block_size: DEFAULT_BLOCK_SIZE,
        max_window: o.readahead_max,
        part_size: o.part_size,
        ..ReadaheadConfig::default()
    }
    .normalized();
    BucketFs::new(
        store,
        blocks,
        FsConfig {
            root_prefix: config.source.prefix.clone(),
            defaults: AttrDefaults {
                uid: o.uid,
                gid: o.gid,
                file_mode: o.file_mode,
                dir_mode: o.dir_mode,
                mount_time: SystemTime::now(),
            },
            umask: o.umask,
            attr_ttl: o.attr_ttl,
            dir_ttl: o.dir_ttl,
            negative_ttl: o.negative_ttl,
            listing_cache_entries: o.listing_cache_entries,
            readahead,
            kernel_cache: o.kernel_cache,
        },
        writes,
    )
}

/// The FUSE mount options and worker threads.
fn fuse_config(config: &MountConfig) -> fuser::Config {
    use fuser::MountOption as M;
    let mut fuse = fuser::Config::default();
    fuse.mount_options = vec![
        M::FSName(format!("bucketfs:{}", config.source)),
        M::Subtype("bucketfs".into()),
        M::DefaultPermissions,
    ];
    // mount(8)'s dev/suid/exec, with the safe defaults nodev, nosuid.
    let o = &config.options;
    fuse.mount_options.push(if o.dev == Some(true) {
        M::Dev
    } else {
        M::NoDev
    });
    fuse.mount_options.push(if o.suid == Some(true) {
        M::Suid
    } else {
        M::NoSuid
    });
    if o.exec == Some(false) {
        fuse.mount_options.push(M::NoExec);
    }
    if config.options.read_only {
        fuse.mount_options.push(M::RO);
    }
    if config.options.allow_other {
        fuse.acl = fuser::SessionACL::All;
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    fuse.n_threads = Some(cores.clamp(2, 8));
    fuse
}

/// Probes the bucket (steps 2) and returns the store for the mount.
async fn probe(config: &MountConfig) -> Result<HttpStore, String> {
    let mut http = config.http_store_config();
    let full_retry = http.retry;
    http.retry = RetryPolicy {
        max_attempts: PROBE_ATTEMPTS,
        ..full_retry
    };
    // One client for the probe and the mount: the connection the probe
    // opens serves the first reads (a lower time to first byte).
    let mut store = HttpStore::new(http).map_err(|e| format!("invalid configuration: {e}"))?;
    let list = ListRequest {
        prefix: config.source.prefix.clone(),
        delimiter: Some("/".into()),
        continuation: None,
        start_after: None,
        max_keys: Some(1),
    };
    store
        .list_objects(&list)
        .await
        .map_err(|e| probe_error(config, e))?;
    match store.head_bucket().await {
        Ok(info) => {
            if info.obs_pfs || info.oss_hierarchical_namespace {
                info!(
                    "bucket type: {}",
                    if info.obs_pfs {
                        "OBS parallel file system"
                    } else {
                        "OSS hierarchical namespace"
                    }
                );
            }
            store.apply_bucket_info(&info);
        }
        Err(e) => {
            warn!("cannot read the bucket's type ({e}); native rename and PFS operations stay off")
        }
    }
    store.set_retry(full_retry);
    Ok(store)
}

/// One line for a failed probe (subtle case 2).
fn probe_error(config: &MountConfig, err: StoreError) -> String {
    let bucket = &config.source.bucket;
    let endpoint = &config.endpoint;
    match err {
        StoreError::NoSuchBucket { .. } => {
            format!("bucket {bucket} does not exist at {endpoint} (NoSuchBucket)")
        }
        StoreError::BadCredentials(d) => format!(
            "the credentials were refused by {endpoint} ({d}); check the access key id and secret"
        ),
        StoreError::AccessDenied(d) => format!(
            "access to bucket {bucket} at {endpoint} is denied ({d}); check the credentials and the bucket policy"
        ),
        StoreError::Transport(e) if e.to_ascii_lowercase().contains("certificate") => format!(
            "the TLS certificate of {endpoint} is not trusted ({e}); check the endpoint, or trust its CA with -o ca_file=PATH (a PEM file)"
        ),
        StoreError::Transport(e) | StoreError::Timeout(e) => {
            format!("cannot connect to {endpoint}: {e}")
        }
        other => format!("cannot use bucket {bucket} at {endpoint}: {other}"),
    }
}

fn mount_error(mount_point: &Path, e: std::io::Error) -> String {
    let shown = mount_point.display();
    match e.kind() {
        std::io::ErrorKind::NotFound => format!(
            "cannot mount at {shown}: {e} (is FUSE available? /dev/fuse and fusermount3 come with the fuse3 package)"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot mount at {shown}: {e} (non-root users need fusermount3 from the fuse3 package; allow_other needs user_allow_other in /etc/fuse.conf)"
        ),
        _ => format!("cannot mount at {shown}: {e}"),
    }
}

/// Largest kernel readahead asked for, in KiB (see [`tune_kernel_readahead`]).
const KERNEL_READAHEAD_MAX_KB: u64 = 16 << 10;

/// Raises the kernel's readahead for a `kernel_cache` mount (its bdi's
/// `read_ahead_kb`, 128 KiB by default, and FUSE's INIT cannot raise it);
/// direct-I/O reads bypass kernel readahead. With a larger window the
/// kernel sends 1 MiB reads ahead of the reader instead of one 128 KiB read
/// at a time, which more than doubled page-cache sequential reads here.
/// Only root may write it; others keep the default, which is logged.
fn tune_kernel_readahead(mount_point: &Path, readahead_max: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mount_point) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let kb = (readahead_max / 1024).clamp(128, KERNEL_READAHEAD_MAX_KB);
    match std::fs::write(&path, kb.to_string()) {
        Ok(()) => tracing::debug!("kernel readahead set to {kb} KiB ({path})"),
        Err(e) => tracing::debug!("kernel readahead left at its default ({path}: {e})"),
    }
}

/// Detaches a busy mount: root uses umount2(MNT_DETACH), others fusermount3.
fn lazy_unmount(mount_point: &PathBuf) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(path) = std::ffi::CString::new(mount_point.as_os_str().as_bytes()) {
        // SAFETY: `path` is a valid NUL-terminated string for the call.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mount_point)
        .status();
}
