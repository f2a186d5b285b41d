//! bucketfs beside s3fs, rclone mount and a direct client, on one server in
//! one run (issue 13). Each workload runs on every filesystem in turn,
//! round after round, each run on a fresh mount with the page cache
//! dropped; the direct client (this crate's `HttpStore`, no FUSE: 8 MiB
//! ranged GETs and multipart parts, 8 in flight) is the ceiling where it
//! can do the same work.
//!
//! Servers: the built-in emulator in this process (S3 dialect, with an OSS
//! one for the appendable-object rows; its counters give the requests and
//! bytes of every run), or the Garage `tests/garage/run.sh` starts when
//! the bench runs under it. `benches/bucketfs-bench` runs both.
//!
//! Output: `docs/benchmarks/<server>.jsonl` (one JSON line a run), then
//! `docs/benchmarks.md` (medians, speed relative to bucketfs, requests,
//! the targets with pass or short, `analysis.md` appended) and
//! `docs/benchmarks/ratios.png` from every `.jsonl` there. Progress on
//! stderr, the targets on stdout.
//!
//! Run: `benches/bucketfs-bench` (or `cargo bench --bench compare`), as
//! root. Env: `BENCH_ROUNDS` (default 3), `BENCH_TIMEOUT` (seconds a run
//! may take, default 600), `BENCH_WORKLOADS` and `BENCH_FS` (comma lists
//! to run a subset), `BENCH_OUT` (directory instead of `docs/`),
//! `BENCH_MOUNT_OPTIONS` (more `-o` options for bucketfs),
//! `BENCH_REPORT_ONLY=1` (rewrite the report from the results there).
//!
//! Under `cargo test` it is a smoke test: tiny sizes, one round, bucketfs
//! and the direct client on the emulator, output under the target
//! directory; it fails if a run fails or a request-count target is short.

#[path = "../common/mod.rs"]
mod common;
mod peers;
mod report;
mod server;
mod workloads;

use bucketfs::store::Provider;
use common::Scratch;
use peers::Fs;
use server::Server;
use std::path::PathBuf;
use std::time::Duration;
use workloads::{Bench, Sizes, Target, Workload};

/// Workloads run against the emulator's OSS dialect: the rows where
/// appendable objects make the difference.
const APPENDABLE_ROWS: &[&str] = &["create_1", "append"];

fn env_list(name: &str) -> Option<Vec<String>> {
    let value = std::env::var(name).ok()?;
    Some(value.split(',').map(|s| s.trim().to_string()).collect())
}

fn main() {
    let smoke = !common::is_bench_run();
    let sizes = if smoke { Sizes::smoke() } else { Sizes::full() };
    let rounds = common::env_u64("BENCH_ROUNDS", 3, 1).max(1);
    let timeout = Duration::from_secs(common::env_u64("BENCH_TIMEOUT", 600, 120));
    let wanted_workloads = env_list("BENCH_WORKLOADS");
    let wanted_fs = env_list("BENCH_FS").unwrap_or_else(|| {
        let all = if smoke { &Fs::ALL[..1] } else { &Fs::ALL[..] };
        all.iter().map(|fs| fs.name().to_string()).collect()
    });
    let out_dir = if smoke {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("compare-smoke")
    } else {
        std::env::var_os("BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs"))
    };
    let data_dir = out_dir.join("benchmarks");
    std::fs::create_dir_all(&data_dir).expect("create the output directory");
    let command =
        std::env::var("BENCH_COMMAND").unwrap_or_else(|_| "cargo bench --bench compare".into());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scratch = Scratch::new("compare");
    let servers: Vec<(Server, Option<&[&str]>)> = match Server::garage(runtime.handle()) {
        Some(garage) => vec![(garage, None)],
        None => vec![
            (Server::emulator(runtime.handle(), Provider::S3), None),
            (
                Server::emulator(runtime.handle(), Provider::Oss),
                Some(APPENDABLE_ROWS),
            ),
        ],
    };
    let mut failures = Vec::new();
    // BENCH_REPORT_ONLY=1 rewrites the report from the results already
    // there (after editing analysis.md), without running anything.
    let report_only = std::env::var_os("BENCH_REPORT_ONLY").is_some() && !smoke;
    for (server, only) in servers.iter().filter(|_| !report_only) {
        let chosen: Vec<Workload> = workloads::workloads(&sizes)
            .into_iter()
            .filter(|w| only.is_none_or(|ids| ids.contains(&w.id)))
            .filter(|w| {
                wanted_workloads
                    .as_ref()
                    .is_none_or(|ids| ids.iter().any(|id| id == w.id))
            })
            .collect();
        let mut skipped: Vec<(String, String)> = Vec::new();
        let filesystems: Vec<Fs> = Fs::ALL
            .into_iter()
            .filter(|fs| wanted_fs.iter().any(|name| name == fs.name()))
            .filter(|fs| match fs.missing(server) {
                Some(why) => {
                    eprintln!("{}: {why}", server.name);
                    skipped.push((fs.name().to_string(), why));
                    false
                }
                None => true,
            })
            .collect();
        eprintln!("{}: seeding the objects the workloads read...", server.name);
        let ids: Vec<&str> = chosen.iter().map(|w| w.id).collect();
        let mut bench = Bench::prepare(server, &scratch, sizes.clone(), timeout, &ids);
        if !bench.drops_cache {
            skipped.push((
                "dropping the page cache".into(),
                "not root: cold runs may be served from the page cache".into(),
            ));
        }
        let runnable: Vec<&Workload> = chosen
            .iter()
            .filter(|w| match bench.unavailable(w) {
                Some(why) => {
                    eprintln!("{}: {}: {why}", server.name, w.title);
                    skipped.push((w.title.clone(), why));
                    false
                }
                None => true,
            })
            .collect();
        let runs_per_round: usize = runnable
            .iter()
            .map(|w| filesystems.len() + usize::from(w.direct))
            .sum();
        let total = runs_per_round * rounds as usize;
        let mut lines = Vec::new();
        let mut done = 0;
        for round in 1..=rounds {
            for w in &runnable {
                let targets = w
                    .direct
                    .then_some(Target::Direct)
                    .into_iter()
                    .chain(filesystems.iter().map(|fs| Target::Fs(*fs)));
                for target in targets {
                    done += 1;
                    let tag = format!("{}-{round}", target.name());
                    eprint!(
                        "[{} {done}/{total}] round {round}: {} by {}... ",
                        server.name,
                        w.title,
                        target.name()
                    );
                    let result = bench.run(w, target, &tag);
                    match &result {
                        Ok(m) => {
                            let requests: u64 = m
                                .counters
                                .iter()
                                .flat_map(|c| c.values())
                                .map(|c| c.requests)
                                .sum();
                            eprintln!(
                                "{:.2} {} ({:.2} s, {requests} requests)",
                                m.value,
                                w.unit.label(),
                                m.seconds
                            );
                        }
                        Err(e) => {
                            eprintln!("FAILED: {e}");
                            failures.push(format!(
                                "{} / {} / {}: {e}",
                                server.name,
                                w.id,
                                target.name()
                            ));
                        }
                    }
                    lines.push(report::record(&server.name, w, target, round, &result));
                }
            }
        }
        let mut text = report::header(&server.name, &command, rounds, &sizes, &skipped).to_string();
        for line in &lines {
            text.push('\n');
            text.push_str(&line.to_string());
        }
        text.push('\n');
        let file = data_dir.join(format!("{}.jsonl", server.name));
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
    }
    drop(servers);
    drop(scratch);

    let analysis = (!smoke).then_some(include_str!("analysis.md"));
    let markdown = out_dir.join("benchmarks.md");
    let checks = report::write_report(&data_dir, &markdown, analysis);
    println!("targets (details in {}):", markdown.display());
    for c in &checks {
        let verdict = if c.pass { "pass " } else { "SHORT" };
        println!("  {verdict} [{}] {}: {}", c.server, c.target, c.detail);
    }
    if smoke {
        // S3 has no append: a file appended to is uploaded whole again
        // (analysis.md), so the append target binds where the dialect
        // has appendable objects.
        let short: Vec<String> = checks
            .iter()
            .filter(|c| c.deterministic && !c.pass)
            .filter(|c| !(c.target.starts_with("append") && c.server == "emulator"))
            .map(|c| format!("[{}] {}: {}", c.server, c.target, c.detail))
            .collect();
        assert!(failures.is_empty(), "runs failed:\n{}", failures.join("\n"));
        assert!(
            short.is_empty(),
            "request targets short:\n{}",
            short.join("\n")
        );
        // The request targets were checked, not skipped.
        for (server, target) in [
            ("emulator", "create_1"),
            ("emulator", "create_8"),
            ("emulator", "ls_large"),
            ("emulator-oss", "create_1"),
            ("emulator-oss", "append"),
        ] {
            let checked = checks
                .iter()
                .any(|c| c.deterministic && c.server == server && c.target.starts_with(target));
            assert!(checked, "[{server}] {target}: request target not checked");
        }
    }
}
