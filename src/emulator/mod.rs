//! `bucketfs emulator`: a local object-store server speaking the S3, OSS,
//! OBS and COS dialects, for tests, benchmarks and trying bucketfs without a
//! cloud account. Not a production store: objects live in memory.
//!
//! `wire` reads requests and writes each dialect's XML, `handler` routes and
//! runs operations on a [`crate::store::memory::MemoryStore`] per bucket,
//! `stats` counts requests and bytes per operation (`GET /-/stats`),
//! `faults` makes chosen requests fail (`--fault`, `/-/faults`; `body` cuts
//! a response short for the `truncate` fault), `persist`
//! keeps objects in a directory across restarts (`--data`).

pub mod body;
pub mod faults;
pub mod handler;
pub mod persist;
pub mod stats;
pub mod wire;

use crate::store::credentials::Credentials;
use crate::store::dialect::Provider;
use body::ResponseBody;
use bytes::Bytes;
use faults::{FaultKind, FaultRule, Faults};
use handler::{BucketSpec, Emulator, Incoming};
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// How to run an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub listen: SocketAddr,
    pub provider: Provider,
    pub buckets: Vec<BucketSpec>,
    pub credentials: Credentials,
    /// Fault rules active from the start.
    pub faults: Vec<FaultRule>,
    /// Seed of the fault generator (fractions of requests).
    pub seed: u64,
    /// Directory that keeps objects across restarts; `None` = memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

/// A running emulator; stops when dropped.
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub emulator: Arc<Emulator>,
    pub faults: Arc<Faults>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds and starts serving in the background of the current tokio runtime.
pub async fn start(config: EmulatorConfig) -> std::io::Result<RunningEmulator> {
    wire::learn_header_case().await;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let mut emulator = Emulator::new(config.provider, &config.buckets, config.credentials);
    let data = match &config.data_dir {
        Some(dir) => {
            emulator = emulator.track_changes();
            let data = persist::DataDir::open(dir)?;
            for (name, store) in emulator.stores() {
                let n = data.load(name, store)?;
                tracing::info!("bucket {name}: {n} objects loaded from {}", dir.display());
            }
            Some(Arc::new(data))
        }
        None => None,
    };
    let emulator = Arc::new(emulator);
    let faults = Arc::new(Faults::new(config.faults, config.seed));
    let serving = emulator.clone();
    let serving_faults = faults.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let emulator = serving.clone();
            let faults = serving_faults.clone();
            let data = data.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    serve(emulator.clone(), faults.clone(), data.clone(), req)
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!("connection ended: {e}");
                }
            });
        }
    });
    Ok(RunningEmulator {
        url: format!("http://{addr}"),
        emulator,
        faults,
        task,
    })
}

/// The connection is dropped without an answer (fault `reset`).
#[derive(Debug)]
struct ConnectionReset;

impl std::fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault rule")
    }
}

impl std::error::Error for ConnectionReset {}

async fn serve(
    emulator: Arc<Emulator>,
    faults: Arc<Faults>,
    data: Option<Arc<persist::DataDir>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<ResponseBody>, ConnectionReset> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::debug!("request body not read: {e}");
            return Ok(plain(400, "request body could not be read"));
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let host = parts
        .headers
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let incoming = Incoming {
        method: parts.method.as_str().to_string(),
        host,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
    };
    if let Some(admin) = incoming.path.strip_prefix("/-/faults") {
        return Ok(faults_admin(
            &faults,
            &incoming.method,
            admin,
            &incoming.body,
        ));
    }
    let head = incoming.method == "HEAD";
    let operation = handler::classify(&incoming).name();
    let fault = faults.decide(operation);
    let out = match fault {
        Some(FaultKind::Reset) => {
            emulator
                .stats
                .record(operation, incoming.body.len() as u64, 0);
            return Err(ConnectionReset);
        }
        Some(kind @ (FaultKind::Internal | FaultKind::SlowDown | FaultKind::Denied)) => {
            let (status, code) = match kind {
                FaultKind::Internal => (500, "InternalError"),
                FaultKind::Denied => (403, "AccessDenied"),
                _ => (503, "SlowDown"),
            };
            let body = wire::error_body(code, "injected fault", &incoming.path, "FAULT");
            emulator
                .stats
                .record(operation, incoming.body.len() as u64, body.len() as u64);
            handler::Outgoing {
                status,
                headers: vec![("Content-Type".into(), "application/xml".into())],
                body: Bytes::from(body),
            }
        }
        Some(FaultKind::Delay(d)) => {
            tokio::time::sleep(d).await;
            emulator.handle(incoming).await
        }
        Some(FaultKind::Late(d)) => {
            // Handled in a task of its own, which a client hanging up does
            // not cancel: a server that finishes what the client gave up
            // waiting for.
            let work = {
                let emulator = emulator.clone();
                tokio::spawn(async move { emulator.handle(incoming).await })
            };
            tokio::time::sleep(d).await;
            match work.await {
                Ok(out) => out,
                Err(e) => {
                    tracing::error!("a delayed request failed: {e}");
                    return Ok(plain(500, "the request failed"));
                }
            }
        }
        Some(FaultKind::Truncate) | None => emulator.handle(incoming).await,
    };
    if let Some(data) = &data {
        for (name, store) in emulator.stores() {
            if let Err(e) = data.save_changes(name, store) {
                // The answer already reflects the change; a failed save only
                // costs it across a restart, so say so loudly and go on.
                tracing::error!("bucket {name}: saving to the data directory failed: {e}");
            }
        }
    }
    let mut response = hyper::Response::builder().status(out.status);
    let mut content_length = None;
    for (name, value) in &out.headers {
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.clone());
            continue;
        }
        response = response.header(name.as_str(), value.as_bytes());
    }
    let body = if head {
        if let Some(len) = content_length {
            // hyper keeps an explicit Content-Length on HEAD responses.
            response = response.header("content-length", len);
        }
        ResponseBody::whole(Bytes::new())
    } else if fault == Some(FaultKind::Truncate) && out.body.len() > 1 {
        ResponseBody::cut_in_half(out.body)
    } else {
        ResponseBody::whole(out.body)
    };
    let mut response = response
        .body(body)
        .unwrap_or_else(|_| plain(500, "response could not be built"));
    if let Some(case) = wire::header_case() {
        // `ETag`, `Content-Length`... spelled as the services do (COS SDK).
        *response.extensions_mut() = case.clone();
    }
    Ok(response)
}

/// `GET /-/faults` lists the rules, `POST` adds the rules in the body (one
/// per line), `DELETE` removes them all.
fn faults_admin(
    faults: &Faults,
    method: &str,
    rest: &str,
    body: &[u8],
) -> hyper::Response<ResponseBody> {
    if !rest.is_empty() {
        return plain(404, "unknown admin endpoint\n");
    }
    match method {
        "GET" => text(200, faults.describe()),
        "DELETE" => {
            faults.clear();
            text(200, String::new())
        }
        "POST" => {
            let rules: Result<Vec<FaultRule>, String> = String::from_utf8_lossy(body)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(FaultRule::parse)
                .collect();
            match rules {
                Ok(rules) => {
                    faults.add(rules);
                    text(200, faults.describe())
                }
                Err(e) => text(400, e + "\n"),
            }
        }
        _ => plain(405, "use GET, POST or DELETE\n"),
    }
}

fn text(status: u16, body: String) -> hyper::Response<ResponseBody> {
    let mut r = plain(status, "");
    *r.body_mut() = ResponseBody::whole(Bytes::from(body));
    r
}

fn plain(status: u16, text: &'static str) -> hyper::Response<ResponseBody> {
    let mut r = hyper::Response::new(ResponseBody::whole(Bytes::from_static(text.as_bytes())));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
