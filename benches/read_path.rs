//! The read path of `bucketfs mount` against the emulator, for issue 4
//! ("mount a bucket and read it fast"). Each figure comes with a baseline
//! measured in the same run:
//!
//! 1. baseline: a direct download of a large object with our HttpStore
//!    client (8 MiB ranged GETs, 8 in flight), GB/s;
//! 2. cold sequential read through the mount with 1 MiB `read` calls into
//!    a page-aligned buffer, GB/s, and the ratio mount/baseline (goal: at
//!    least 0.8), best of the rounds each; rounds of 1 and 2 alternate, so
//!    drift of the machine hits both alike. One mount serves
//!    every round, as a long-running daemon would, and each round reads an
//!    object the mount has never read (nothing of it in the block cache or
//!    the page cache); the first round is also shown on its own (a fresh
//!    daemon whose memory is all new). The bytes read are compared with the
//!    object, so a fast wrong read fails the run. Beside each round, the
//!    CPU seconds of the bench process (reader and emulator) and of the
//!    daemon;
//! 3. a re-read of the last object (partly served from the block cache);
//! 4. time to first byte: `open` plus the first 4 KiB `read` of a large
//!    object not read before, each sample on a fresh mount (median), against
//!    one direct 4 KiB ranged GET (median);
//! 5. `ls -l` of a directory of 10,000 objects on a fresh mount: time, and
//!    the LIST and HEAD requests it cost (from the emulator's counters),
//!    checked: the listing's pages plus the lookup of the directory.
//!
//! The emulator and the bench's own client run on a tokio runtime in this
//! process; the mount is a child process (`bucketfs mount ... -f`, the
//! release build under `cargo bench`). Blocking file I/O on the mount runs
//! on the main thread outside the runtime, so the runtime keeps serving the
//! daemon's GETs meanwhile.
//!
//! Run: `cargo bench --bench read_path` (as root, or with `fusermount3`).
//! Env: `BENCH_MIB` (object size, default 1024), `BENCH_ROUNDS` (rounds of
//! 1 and 2, best kept, default 3), `BENCH_TTFB_SAMPLES` (default 5),
//! `BENCH_LS_OBJECTS` (default 10000), `BENCH_MOUNT_OPTIONS` (more `-o`
//! options for the mounts, to compare settings). Progress goes to stderr, the summary
//! table to stdout. Under `cargo test` it runs as a smoke test (16 MiB, one
//! round, one sample, 1500 objects) with the same checks.

mod common;

use common::{MountedDaemon, Scratch, median, ms, object_bytes, own_cpu, process_cpu, ranged_get};

use bucketfs::emulator::{self, EmulatorConfig, RunningEmulator, handler::BucketSpec};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::memory::ObjectRecord;
use bucketfs::store::retry::RetryPolicy;
use bucketfs::store::*;
use bytes::Bytes;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "bench-ak";
const SECRET_KEY: &str = "bench-sk";
/// Range size of each baseline GET: the mount's default `part_size`.
const PART: u64 = 8 << 20;
/// Baseline GETs in flight at once: 64 MiB in flight, the mount's default
/// `readahead_max`.
const PARALLEL: usize = 8;
/// Size of each `read` call on the mount.
const READ_CALL: usize = 1 << 20;
/// Alignment of the reader's buffer.
const PAGE: usize = 4096;
/// The first read of the time-to-first-byte figure.
const FIRST_READ: usize = 4096;
fn import(emu: &RunningEmulator, key: &str, body: Bytes, etag: String) {
    emu.emulator.stores()[BUCKET].import_object(
        key,
        ObjectRecord {
            body,
            etag,
            last_modified: SystemTime::now(),
            content_type: None,
            metadata: Metadata::new(),
            object_type: ObjectType::Normal,
            symlink_target: None,
        },
    );
}

fn client(url: &str) -> Arc<HttpStore> {
    let mut config = HttpStoreConfig::new(
        url,
        BUCKET,
        Dialect::new(Provider::S3),
        Credentials::new(ACCESS_KEY, SECRET_KEY),
    );
    config.path_style = true;
    config.region = "us-east-1".into();
    config.retry = RetryPolicy::none();
    Arc::new(HttpStore::new(config).expect("HttpStore"))
}

/// Downloads `key` (`size` bytes) as `PART`-sized ranged GETs, keeping
/// `PARALLEL` in flight (a new one starts as soon as one ends).
async fn download(store: Arc<HttpStore>, key: &str, size: u64) -> Duration {
    let started = Instant::now();
    let mut ranges = (0..size)
        .step_by(PART as usize)
        .map(|s| s..(s + PART).min(size));
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        while in_flight.len() < PARALLEL {
            let Some(range) = ranges.next() else { break };
            let (store, key) = (store.clone(), key.to_string());
            in_flight.spawn(async move { ranged_get(&*store, &key, range).await.len() });
        }
        match in_flight.join_next().await {
            Some(done) => {
                done.expect("GET task");
            }
            None => break,
        }
    }
    started.elapsed()
}

/// A `bucketfs mount -f` child serving the emulator's bucket on
/// `scratch/mnt`, unmounted when dropped.
struct Mount(MountedDaemon);

impl Mount {
    /// Starts the daemon and waits until the mount point is mounted.
    fn start(scratch: &Scratch, endpoint: &str) -> Mount {
        let mnt = scratch.subdir("mnt");
        let mut command = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
        command
            .arg("mount")
            .arg(format!("s3://{BUCKET}"))
            .arg(&mnt)
            .arg("-f")
            .arg("-o")
            .arg(format!("endpoint={endpoint}"));
        if let Ok(extra) = std::env::var("BENCH_MOUNT_OPTIONS") {
            command.arg("-o").arg(extra);
        }
        let env = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ];
        Mount(
            MountedDaemon::start(command, &mnt, &scratch.dir.join("mount.log"), &env)
                .unwrap_or_else(|e| panic!("bucketfs mount: {e}")),
        )
    }
}

/// Reads `path` whole with `READ_CALL`-sized reads into `buf` (already
/// touched, at least as large as the file); returns the bytes read.
fn read_whole(path: &Path, buf: &mut [u8]) -> usize {
    let mut file = std::fs::File::open(path).expect("open on the mount");
    let mut filled = 0;
    loop {
        let end = (filled + READ_CALL).min(buf.len());
        let n = file.read(&mut buf[filled..end]).expect("read on the mount");
        if n == 0 {
            return filled;
        }
        filled += n;
        if filled == buf.len() {
            // A file longer than expected shows as one extra byte.
            let mut extra = [0u8; 1];
            return filled + file.read(&mut extra).expect("read on the mount");
        }
    }
}

/// The emulator's request counters, by operation name.
async fn emulator_stats(url: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}/-/stats"))
        .send()
        .await
        .expect("GET /-/stats")
        .json()
        .await
        .expect("stats JSON")
}

async fn reset_emulator_stats(url: &str) {
    let status = reqwest::Client::new()
        .post(format!("{url}/-/stats/reset"))
        .send()
        .await
        .expect("POST /-/stats/reset")
        .status();
    assert!(status.is_success(), "stats reset: {status}");
}

fn requests(stats: &serde_json::Value, operation: &str) -> u64 {
    stats[operation]["requests"].as_u64().unwrap_or(0)
}

/// One timed read of `key` through the mount into `buf`, checked against
/// `data`; returns the time taken and the CPU seconds of the bench process
/// (reader and emulator) and of the daemon meanwhile.
fn timed_read(mount: &Mount, key: &str, buf: &mut [u8], data: &[u8]) -> (Duration, f64, f64) {
    let daemon = mount.0.pid();
    let (own_before, daemon_before) = (own_cpu(), process_cpu(daemon));
    let started = Instant::now();
    let got = read_whole(&mount.0.mnt.join(key), buf);
    let took = started.elapsed();
    let (own, daemon) = (own_cpu() - own_before, process_cpu(daemon) - daemon_before);
    assert_eq!(got, data.len(), "bytes of {key} read through the mount");
    assert!(
        buf[..] == data[..],
        "the mount returned wrong bytes of {key}"
    );
    (took, own, daemon)
}

fn main() {
    let mib = common::env_u64("BENCH_MIB", 1024, 16);
    let rounds = common::env_u64("BENCH_ROUNDS", 3, 1).max(1);
    let ttfb_samples = common::env_u64("BENCH_TTFB_SAMPLES", 5, 1).max(1);
    let ls_objects = common::env_u64("BENCH_LS_OBJECTS", 10_000, 1500);
    let size = mib << 20;
    let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;

    // Dropped last: by then every mount guard has unmounted.
    let scratch = Scratch::new("read-path");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    eprintln!("preparing {rounds} objects of {mib} MiB and {ls_objects} small ones...");
    let data = object_bytes(size);
    let emu = runtime
        .block_on(emulator::start(EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            provider: Provider::S3,
            buckets: vec![BucketSpec::parse(BUCKET).unwrap()],
            credentials: Credentials::new(ACCESS_KEY, SECRET_KEY),
            faults: Vec::new(),
            seed: 0,
            data_dir: None,
        }))
        .expect("start the emulator");
    // The large objects share one buffer (no extra memory) but are distinct
    // files to the mount, so each round reads an object it never read.
    let big_keys: Vec<String> = (0..rounds).map(|i| format!("big-{i}")).collect();
    let ttfb_keys: Vec<String> = (0..ttfb_samples).map(|i| format!("ttfb-{i}")).collect();
    for (i, key) in big_keys.iter().chain(&ttfb_keys).enumerate() {
        import(&emu, key, data.clone(), format!("{:032x}", 1 + i));
    }
    for i in 0..ls_objects {
        let body = Bytes::from(format!("small object {i}\n"));
        import(
            &emu,
            &format!("many/{i:05}"),
            body,
            format!("{:032x}", 1_000_000 + i),
        );
    }
    let store = client(&emu.url);

    // 1 and 2, interleaved so that both see the machine in the same state:
    // each round downloads directly, then reads through the mount. One
    // mount serves every round, as a long-running daemon would, and each
    // round reads an object it has never read (nothing of it in the block
    // cache or the page cache); round 1 is also the first read of a fresh
    // daemon. The reader's buffer is page-aligned, as those of cp, cat and
    // dd are: the kernel's copy into it is much slower on some CPUs when
    // its alignment differs from the daemon's buffer (README, "Read
    // performance").
    let mut raw = vec![1u8; size as usize + PAGE];
    let aligned = raw.as_ptr().align_offset(PAGE);
    let buf = &mut raw[aligned..aligned + size as usize];
    let (mut best_direct, mut best_mount) = (Duration::MAX, Duration::MAX);
    let mut first_mount = Duration::MAX;
    let mount = Mount::start(&scratch, &emu.url);
    for (round, key) in (1..).zip(&big_keys) {
        let cpu_before = own_cpu();
        let direct = runtime.block_on(download(store.clone(), &big_keys[0], size));
        eprintln!(
            "round {round}/{rounds}: direct download {:.2} GB/s (CPU {:.2} s in {:.2} s)",
            gbps(direct),
            own_cpu() - cpu_before,
            direct.as_secs_f64()
        );
        best_direct = best_direct.min(direct);
        let (took, own, daemon) = timed_read(&mount, key, buf, &data);
        eprintln!(
            "round {round}/{rounds}: through the mount {:.2} GB/s ({:.2} s, bytes verified; CPU: bench+emulator {own:.2} s, daemon {daemon:.2} s)",
            gbps(took),
            took.as_secs_f64()
        );
        if round == 1 {
            first_mount = took;
        }
        best_mount = best_mount.min(took);
    }
    // 3. The last object again: its last `cache_size` bytes are in the
    // block cache, the rest is fetched again.
    let last = big_keys.last().expect("at least one round");
    let (warm, own, daemon) = timed_read(&mount, last, buf, &data);
    eprintln!(
        "re-read: {:.2} GB/s (CPU: bench+emulator {own:.2} s, daemon {daemon:.2} s)",
        gbps(warm)
    );
    drop(mount);
    drop(raw);

    // 4. Time to first byte, one fresh mount per sample.
    let mut first_bytes = Vec::new();
    for (i, key) in ttfb_keys.iter().enumerate() {
        let mount = Mount::start(&scratch, &emu.url);
        let mut first = [0u8; FIRST_READ];
        let started = Instant::now();
        let mut file = std::fs::File::open(scratch.dir.join("mnt").join(key)).expect("open");
        let opened = started.elapsed();
        file.read_exact(&mut first).expect("first read");
        let took = started.elapsed();
        drop(file);
        drop(mount);
        assert!(first[..] == data[..FIRST_READ], "wrong first bytes");
        eprintln!(
            "first byte {}/{ttfb_samples}: {:.2} ms (open {:.2} ms)",
            i + 1,
            ms(took),
            ms(opened)
        );
        first_bytes.push(took);
    }
    let mut direct_firsts = Vec::new();
    runtime.block_on(async {
        // One GET first, so the samples reuse a connection as the mount's
        // GETs do (its bucket probe opened one).
        ranged_get(&*store, &big_keys[0], 0..FIRST_READ as u64).await;
        for key in &ttfb_keys {
            let started = Instant::now();
            ranged_get(&*store, key, 0..FIRST_READ as u64).await;
            direct_firsts.push(started.elapsed());
        }
    });
    let first_byte = median(first_bytes);
    let direct_first = median(direct_firsts);
    eprintln!(
        "direct 4 KiB GET: {:.2} ms (median of {ttfb_samples})",
        ms(direct_first)
    );

    // 5. ls -l of many objects on a fresh mount.
    let mount = Mount::start(&scratch, &emu.url);
    runtime.block_on(reset_emulator_stats(&emu.url));
    let many = scratch.dir.join("mnt").join("many");
    let started = Instant::now();
    let status = Command::new("ls")
        .arg("-l")
        .arg(&many)
        .stdout(Stdio::null())
        .status()
        .expect("run ls");
    let ls_took = started.elapsed();
    assert!(status.success(), "ls -l {}: {status}", many.display());
    let stats = runtime.block_on(emulator_stats(&emu.url));
    let listed = std::fs::read_dir(&many).expect("read_dir").count() as u64;
    drop(mount);
    assert_eq!(listed, ls_objects, "entries of {}", many.display());
    let lists = requests(&stats, "ListObjectsV2") + requests(&stats, "ListObjects");
    let heads = requests(&stats, "HeadObject");
    eprintln!(
        "ls -l of {ls_objects} objects: {:.1} ms; emulator counters: {}",
        ms(ls_took),
        serde_json::to_string(&stats).unwrap()
    );
    // The listing pages, plus the lookup of `many` itself (a HEAD and a
    // one-key LIST, in parallel); never a HEAD per entry.
    let expected_lists = ls_objects.div_ceil(1000) + 1;
    assert!(
        lists <= expected_lists && heads <= 1,
        "ls -l cost {lists} LIST and {heads} HEAD; expected {expected_lists} LIST and 1 HEAD"
    );

    println!(
        "bucketfs read path ({mib} MiB objects; best of {rounds} rounds; emulator on 127.0.0.1)"
    );
    println!("| figure | value | baseline |");
    println!("| --- | --- | --- |");
    println!(
        "| cold sequential read, {} MiB reads | {:.2} GB/s (first read of a fresh mount {:.2} GB/s) | direct download {:.2} GB/s ({} MiB GETs, {PARALLEL} in flight); ratio mount/baseline {:.2} (goal >= 0.80) |",
        READ_CALL >> 20,
        gbps(best_mount),
        gbps(first_mount),
        gbps(best_direct),
        PART >> 20,
        best_direct.as_secs_f64() / best_mount.as_secs_f64(),
    );
    println!(
        "| re-read of the last object (its last 256 MiB cached) | {:.2} GB/s | ratio to the direct download {:.2} |",
        gbps(warm),
        best_direct.as_secs_f64() / warm.as_secs_f64(),
    );
    println!(
        "| time to first byte (open + 4 KiB read, fresh mount, median of {ttfb_samples}) | {:.2} ms | direct 4 KiB GET {:.2} ms |",
        ms(first_byte),
        ms(direct_first),
    );
    println!(
        "| ls -l of {ls_objects} objects (fresh mount) | {:.1} ms, {:.0} objects/s | {lists} LIST, {heads} HEAD (the listing's {} pages plus the lookup of the directory) |",
        ms(ls_took),
        ls_objects as f64 / ls_took.as_secs_f64(),
        ls_objects.div_ceil(1000),
    );
    drop(emu);
    drop(runtime);
    drop(scratch);
}
