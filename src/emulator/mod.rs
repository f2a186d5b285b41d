//! `bucketfs emulator`: a local object-store server speaking the S3, OSS,
//! OBS and COS dialects, for tests, benchmarks and trying bucketfs without a
//! cloud account. Not a production store: objects live in memory.
//!
//! `wire` reads requests and writes each dialect's XML, `handler` routes and
//! runs operations on a [`crate::store::memory::MemoryStore`] per bucket,
//! `stats` counts requests and bytes per operation (`GET /-/stats`).

pub mod handler;
pub mod stats;
pub mod wire;

use crate::store::credentials::Credentials;
use crate::store::dialect::Provider;
use bytes::Bytes;
use handler::{BucketSpec, Emulator, Incoming};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
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
}

/// A running emulator; stops when dropped.
pub struct RunningEmulator {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub emulator: Arc<Emulator>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds and starts serving in the background of the current tokio runtime.
pub async fn start(config: EmulatorConfig) -> std::io::Result<RunningEmulator> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let emulator = Arc::new(Emulator::new(
        config.provider,
        &config.buckets,
        config.credentials,
    ));
    let serving = emulator.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let emulator = serving.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| serve(emulator.clone(), req));
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
        task,
    })
}

async fn serve(
    emulator: Arc<Emulator>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
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
    let head = incoming.method == "HEAD";
    let out = emulator.handle(incoming).await;
    let mut response = hyper::Response::builder().status(out.status);
    let mut content_length = None;
    for (name, value) in &out.headers {
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.clone());
            continue;
        }
        response = response.header(name.as_str(), value.as_bytes());
    }
    let body = if head { Bytes::new() } else { out.body };
    if head && let Some(len) = content_length {
        // hyper keeps an explicit Content-Length on HEAD responses.
        response = response.header("content-length", len);
    }
    Ok(response
        .body(Full::new(body))
        .unwrap_or_else(|_| plain(500, "response could not be built")))
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
