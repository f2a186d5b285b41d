//! `bucketfs demo`: the quick start. Starts the emulator on a free port of
//! 127.0.0.1 with a bucket `demo` holding a few sample objects, mounts it
//! at a directory it prints, and serves until Ctrl-C (or `umount`), then
//! unmounts and stops the emulator. No cloud account, no configuration.
//!
//! Subtle cases:
//! 1. The emulator runs on its own runtime in its own thread: the mount's
//!    runtime must be free to block on signals and the FUSE session, and a
//!    FUSE request that waits on the emulator must never wait on a runtime
//!    that is itself blocked in the filesystem.
//! 2. Credentials are the emulator's own and reach the mount configuration
//!    through its injected environment lookup, so the demo neither reads
//!    nor needs the user's cloud credentials.

use crate::emulator::{self, EmulatorConfig, handler::BucketSpec};
use crate::mount::config::{MountConfig, MountOptions, Source};
use crate::mount::run::{Readiness, run_mount};
use crate::store::credentials::Credentials;
use crate::store::{ObjectAttributes, ObjectStore, Provider, PutRequest};
use bytes::Bytes;
use std::path::{Path, PathBuf};

const BUCKET: &str = "demo";
const ACCESS_KEY: &str = "bucketfs-demo";
const SECRET_KEY: &str = "bucketfs-demo-secret";

/// Size of the sample file that shows streaming reads (`cat`/`cp` of it
/// go through the prefetcher).
const LARGE_SAMPLE: usize = 64 << 20;

/// The default mount point: a fixed, easy-to-type path.
pub fn default_mount_point() -> PathBuf {
    std::env::temp_dir().join("bucketfs-demo")
}

/// Runs the demo until unmounted; the error is one line for the terminal.
pub fn run_demo(mount_point: &Path) -> Result<(), String> {
    if !mount_point.exists() {
        std::fs::create_dir_all(mount_point)
            .map_err(|e| format!("cannot create {}: {e}", mount_point.display()))?;
    }
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::Builder::new()
        .name("bucketfs-emulator".into())
        .spawn(move || serve_emulator(url_tx, stop_rx))
        .map_err(|e| format!("cannot start the emulator thread: {e}"))?;
    let url = url_rx
        .recv()
        .map_err(|_| "the emulator stopped before it was ready".to_string())??;

    let result = mount_demo(&url, mount_point);
    let _ = stop_tx.send(());
    let _ = server.join();
    result
}

fn mount_demo(url: &str, mount_point: &Path) -> Result<(), String> {
    let source = Source::parse(&format!("s3://{BUCKET}")).map_err(|e| e.to_string())?;
    let endpoint = format!("endpoint={url}");
    let options = MountOptions::parse(&[&endpoint]).map_err(|e| e.to_string())?;
    let env = |name: &str| match name {
        "AWS_ACCESS_KEY_ID" => Some(ACCESS_KEY.to_string()),
        "AWS_SECRET_ACCESS_KEY" => Some(SECRET_KEY.to_string()),
        _ => None,
    };
    let config = MountConfig::build(source, options, &env).map_err(|e| e.to_string())?;
    let mut readiness = DemoReadiness {
        url: url.to_string(),
    };
    run_mount(config, mount_point, &mut readiness)
}

/// Serves the emulator until `stop` fires; sends its URL (or why it could
/// not start) first.
fn serve_emulator(
    url_tx: std::sync::mpsc::Sender<Result<String, String>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = url_tx.send(Err(format!("cannot start the emulator runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        let config = EmulatorConfig {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            provider: Provider::S3,
            buckets: vec![BucketSpec::parse(BUCKET).expect("a valid bucket name")],
            credentials: Credentials::new(ACCESS_KEY, SECRET_KEY),
            faults: Vec::new(),
            seed: 0,
            data_dir: None,
        };
        let running = match emulator::start(config).await {
            Ok(r) => r,
            Err(e) => {
                let _ = url_tx.send(Err(format!("cannot start the emulator: {e}")));
                return;
            }
        };
        if let Some(store) = running.emulator.stores().get(BUCKET)
            && let Err(e) = seed(store).await
        {
            let _ = url_tx.send(Err(format!("cannot fill the demo bucket: {e}")));
            return;
        }
        let _ = url_tx.send(Ok(running.url.clone()));
        let _ = stop.await;
    });
}

/// One sample object: key, body and s3fs metadata.
type Sample = (&'static str, Bytes, Vec<(&'static str, &'static str)>);

/// The sample objects: a README, a nested tree, an implicit directory, an
/// executable with s3fs metadata, an s3fs-style symlink and a large file.
async fn seed(store: &dyn ObjectStore) -> Result<(), crate::store::StoreError> {
    let readme = "This bucket is served by `bucketfs demo` from memory.\n\
                  Browse it with ls, cat, cp, find; it is read-only for now.\n";
    let mut large = vec![0u8; LARGE_SAMPLE];
    let mut rng = fastrand::Rng::with_seed(42);
    rng.fill(&mut large);
    let samples: Vec<Sample> = vec![
        ("README.txt", Bytes::from(readme), vec![]),
        ("photos/2026/beach.txt", Bytes::from("sand\n"), vec![]),
        ("photos/2026/city.txt", Bytes::from("lights\n"), vec![]),
        ("logs/", Bytes::new(), vec![]),
        ("logs/app.log", Bytes::from("started\nready\n"), vec![]),
        (
            "bin/hello.sh",
            Bytes::from("#!/bin/sh\necho hello from the bucket\n"),
            // s3fs metadata: 0100755 owned by uid/gid 0.
            vec![("mode", "33261"), ("uid", "0"), ("gid", "0")],
        ),
        // An s3fs-style symlink: mode 0120777, body = target.
        (
            "latest.log",
            Bytes::from("logs/app.log"),
            vec![("mode", "41471")],
        ),
        ("data/random-64MiB.bin", Bytes::from(large), vec![]),
    ];
    for (key, body, meta) in samples {
        let mut attributes = ObjectAttributes::default();
        for (k, v) in meta {
            attributes.metadata.insert(k.into(), v.into());
        }
        store
            .put_object(&PutRequest {
                key: key.into(),
                body,
                attributes,
            })
            .await?;
    }
    Ok(())
}

/// Tells the user where to look once the mount is ready.
struct DemoReadiness {
    url: String,
}

impl Readiness for DemoReadiness {
    fn ready(&mut self, mount_point: &Path) {
        let at = mount_point.display();
        println!(
            "bucketfs demo: bucket '{BUCKET}' (emulator at {}) is mounted at {at}",
            self.url
        );
        println!("  try:  ls -l {at}   cat {at}/README.txt   cp {at}/data/random-64MiB.bin /tmp/");
        println!("  Ctrl-C (or: umount {at}) unmounts and stops the emulator.");
    }

    fn failed(&mut self, _message: &str) {}

    fn waiting(&mut self, message: &str) {
        eprintln!("bucketfs demo: {message}");
    }
}
