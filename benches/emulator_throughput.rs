//! How fast the emulator serves a cached object to a parallel ranged-GET
//! client on loopback, as a ratio against a bare HTTP server serving the
//! same bytes in the same run (so the figure says what the emulation costs,
//! whatever the machine).
//!
//! Run: `cargo bench --bench emulator_throughput` (env `BENCH_MIB`, default
//! 1024, sets the object size; `BENCH_ROUNDS`, default 3). Under `cargo
//! test` it runs once on 16 MiB as a smoke test.

mod common;

use bucketfs::emulator::{self, EmulatorConfig, handler::BucketSpec};
use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::memory::ObjectRecord;
use bucketfs::store::retry::RetryPolicy;
use bucketfs::store::*;
use bytes::Bytes;
use http_body_util::Full;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Range size of each GET: the read path's default part size.
const PART: u64 = 8 << 20;
/// GETs in flight at once.
const PARALLEL: usize = 8;

/// Reads `size` bytes as `PART`-sized ranged GETs, `PARALLEL` at a time.
async fn read_all(store: Arc<HttpStore>, size: u64) -> Duration {
    let started = Instant::now();
    let ranges: Vec<_> = (0..size)
        .step_by(PART as usize)
        .map(|s| s..(s + PART).min(size))
        .collect();
    for chunk in ranges.chunks(PARALLEL) {
        let gets = chunk.iter().cloned().map(|range| {
            let store = store.clone();
            tokio::spawn(async move {
                let got = store
                    .get_object(&GetRequest {
                        key: "big".into(),
                        range: Some(range.clone()),
                        if_match: None,
                    })
                    .await
                    .expect("ranged GET");
                assert_eq!(got.body.len() as u64, range.end - range.start);
            })
        });
        for g in gets.collect::<Vec<_>>() {
            g.await.expect("GET task");
        }
    }
    started.elapsed()
}

/// A bare HTTP server answering every request with the requested range of
/// `data`: the baseline (no parsing of S3 requests, no signatures, no store).
async fn bare_server(data: Bytes) -> String {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let data = data.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let data = data.clone();
                    async move {
                        let (a, b) = req
                            .headers()
                            .get("range")
                            .and_then(|r| r.to_str().ok())
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split_once('-'))
                            .map(|(a, b)| {
                                (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())
                            })
                            .unwrap();
                        let resp = hyper::Response::builder()
                            .status(206)
                            .header("Content-Range", format!("bytes {a}-{b}/{}", data.len()))
                            .body(Full::new(data.slice(a..b + 1)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

fn client(url: &str) -> Arc<HttpStore> {
    let mut config = HttpStoreConfig::new(
        url,
        "bench",
        Dialect::new(Provider::S3),
        Credentials::new("ak", "sk"),
    );
    config.path_style = true;
    config.region = "local".into();
    config.retry = RetryPolicy::none();
    Arc::new(HttpStore::new(config).expect("client"))
}

fn main() {
    let mib = common::env_u64("BENCH_MIB", 1024, 16);
    let rounds = common::env_u64("BENCH_ROUNDS", 3, 1);
    let size = mib << 20;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        eprintln!("preparing a {mib} MiB object...");
        let data = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let emu = emulator::start(EmulatorConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            provider: Provider::S3,
            buckets: vec![BucketSpec::parse("bench").unwrap()],
            credentials: Credentials::new("ak", "sk"),
            faults: Vec::new(),
            seed: 0,
            data_dir: None,
        })
        .await
        .unwrap();
        emu.emulator.stores()["bench"].import_object(
            "big",
            ObjectRecord {
                body: data.clone(),
                etag: "bench".into(),
                last_modified: SystemTime::now(),
                content_type: None,
                metadata: Metadata::new(),
                object_type: ObjectType::Normal,
                symlink_target: None,
            },
        );
        let bare_url = bare_server(data).await;
        let emulated = client(&emu.url);
        let bare = client(&bare_url);
        let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;
        let (mut best_emu, mut best_bare) = (Duration::MAX, Duration::MAX);
        for round in 1..=rounds {
            let e = read_all(emulated.clone(), size).await;
            let b = read_all(bare.clone(), size).await;
            eprintln!(
                "round {round}/{rounds}: emulator {:.2} GB/s, bare server {:.2} GB/s",
                gbps(e),
                gbps(b)
            );
            best_emu = best_emu.min(e);
            best_bare = best_bare.min(b);
        }
        println!(
            "emulator: {:.2} GB/s; bare HTTP server: {:.2} GB/s; ratio emulator/bare = {:.2} ({mib} MiB, {} MiB ranges, {PARALLEL} in flight, best of {rounds})",
            gbps(best_emu),
            gbps(best_bare),
            best_bare.as_secs_f64() / best_emu.as_secs_f64(),
            PART >> 20,
        );
    });
}
