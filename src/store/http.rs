//! [`HttpStore`]: the [`ObjectStore`] over HTTP(S), for every dialect.
//!
//! One request goes through [`HttpStore::attempt`]: URL and query built from
//! the dialect, headers signed, response read whole (callers ask for bounded
//! ranges), errors parsed into [`StoreError`]. [`HttpStore::execute`] wraps it
//! in the retry loop. Subtle cases:
//! 1. Non-idempotent operations (append, complete-multipart, modify, rename)
//!    are never re-sent blindly: their methods look at the server's state
//!    after a transient failure and decide (see `append_object`,
//!    `complete_multipart_upload`).
//! 2. A 200 response to CopyObject, UploadPartCopy or CompleteMultipartUpload
//!    may carry an `<Error>` body (the server failed after sending headers);
//!    it is treated as the error it is.
//! 3. GetObject checks the body length against Content-Length and
//!    Content-Range, so a cut connection is a retryable
//!    [`StoreError::IncompleteBody`], never a short read.
//! 4. Keys with a `.` or `..` path segment are sent with `/` encoded as `%2F`:
//!    URL parsers (and proxies) would otherwise resolve the dot segments and
//!    address another key. A key that is only `.` or `..` cannot be sent.
//! 5. ListObjectsV2 falls back to V1 for good once the server shows it lacks
//!    V2 (an error naming the request, or a truncated page with no token).
//! 6. A ranged GET answered with 200 and the whole object is refused before
//!    its body is read, so a server's choice can never make the client
//!    buffer a whole object: OSS does that for a range starting past the
//!    end (its GetObject reference), which is reported as
//!    [`StoreError::InvalidRange`], as the 416 of other servers is; a
//!    server ignoring Range altogether is an [`StoreError::InvalidResponse`].

use super::ObjectStore;
use super::block_buffers::{BufferPool, FillingBlock};
use super::counters::{RequestCount, RequestCounters};
use super::credentials::Credentials;
use super::dialect::{BucketProbe, CopySourceForm, Dialect, Provider, RenameForm};
use super::encode;
use super::error::{ServiceDetails, StoreError, StoreResult, require};
use super::retry::{RetryPolicy, is_retryable};
use super::sign::{RequestParts, SignatureVersion, Signer};
use super::streamed::SourceBody;
use super::types::*;
use super::xml;
use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// How to reach a bucket.
#[derive(Clone, Debug)]
pub struct HttpStoreConfig {
    /// Endpoint URL, e.g. `https://oss-cn-hangzhou.aliyuncs.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    pub dialect: Dialect,
    /// Signing region (SigV4, OSS V4).
    pub region: String,
    /// `/bucket/key` URLs instead of `bucket.host/key`.
    pub path_style: bool,
    pub credentials: Credentials,
    pub retry: RetryPolicy,
    /// Time allowed to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for response bytes.
    pub read_timeout: Duration,
    /// A PEM bundle of CA certificates trusted besides the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any server certificate (an explicit, logged choice).
    pub accept_invalid_certs: bool,
}

impl HttpStoreConfig {
    pub fn new(endpoint: &str, bucket: &str, dialect: Dialect, credentials: Credentials) -> Self {
        HttpStoreConfig {
            endpoint: endpoint.to_string(),
            bucket: bucket.to_string(),
            dialect,
            region: String::new(),
            path_style: false,
            credentials,
            retry: RetryPolicy::default(),
            // Long enough for a TLS handshake across continents, short enough
            // that an unreachable endpoint fails a mount quickly.
            connect_timeout: Duration::from_secs(10),
            // A healthy server streams a part within seconds; 30 s of silence
            // means a stuck connection worth abandoning and retrying.
            read_timeout: Duration::from_secs(30),
            ca_file: None,
            accept_invalid_certs: false,
        }
    }
}

/// One request to send, before addressing and signing.
struct Call {
    op: Operation,
    method: reqwest::Method,
    key: Option<String>,
    query: Vec<(String, Option<String>)>,
    headers: Vec<(String, String)>,
    body: Bytes,
    /// A body streamed from a local source instead of `body`, with the
    /// digests of its first pass (streamed.rs).
    streamed: Option<(Arc<dyn PartSource>, std::ops::Range<u64>, SourceDigests)>,
    /// A 200 response may still carry an `<Error>` body (copy, complete).
    error_in_body: bool,
    /// Deliver a successful body as buffers of this size ([`Reply::blocks`]).
    block_size: Option<usize>,
    /// The most body bytes this call accepts: the range asked for, else
    /// [`MAX_UNSIZED_BODY`]. A server cannot make the client hold more.
    body_limit: u64,
}

/// The most a response without a range of its own may carry: an XML
/// answer (a listing page of 1,000 keys of 1,024 bytes, URL-encoded, is
/// about 4 MiB), an error, a symlink object. Part of the README's constant.
pub const MAX_UNSIZED_BODY: u64 = 16 << 20;

impl Call {
    fn new(op: Operation, method: reqwest::Method, key: Option<&str>) -> Call {
        Call {
            op,
            method,
            key: key.map(str::to_string),
            query: Vec::new(),
            headers: Vec::new(),
            body: Bytes::new(),
            streamed: None,
            error_in_body: false,
            block_size: None,
            body_limit: MAX_UNSIZED_BODY,
        }
    }

    fn error_in_body(mut self) -> Call {
        self.error_in_body = true;
        self
    }

    fn query(mut self, name: &str, value: impl Into<String>) -> Call {
        self.query.push((name.to_string(), Some(value.into())));
        self
    }

    /// A parameter sent without `=` (`?uploads`, `?append`).
    fn flag(mut self, name: &str) -> Call {
        self.query.push((name.to_string(), None));
        self
    }

    fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Call {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body(mut self, body: Bytes) -> Call {
        self.body = body;
        self
    }
}

/// A successful response, body read whole.
struct Reply {
    headers: HeaderMap,
    body: Bytes,
    /// The body cut into buffers of the call's `block_size` (then `body`
    /// is empty), filled straight from the network.
    blocks: Vec<Bytes>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> StoreResult<&str> {
        std::str::from_utf8(&self.body)
            .map_err(|_| StoreError::InvalidResponse("response body is not UTF-8".into()))
    }
}

/// How far before the first CreateMultipartUpload attempt (by the server's
/// clock) an upload still counts as one of its lost ones: `Date` and
/// `Initiated` are given to the second.
const LOST_UPLOAD_CLOCK_SLACK: Duration = Duration::from_secs(2);

/// The object store over HTTP.
#[derive(Debug)]
pub struct HttpStore {
    client: reqwest::Client,
    dialect: Dialect,
    bucket: String,
    scheme: String,
    /// `host[:port]` of the endpoint.
    authority: String,
    path_style: bool,
    signer: Signer,
    credentials: parking_lot::RwLock<Credentials>,
    retry: RetryPolicy,
    /// Set once the server has shown it lacks ListObjectsV2.
    list_v1: AtomicBool,
    /// Buffers for the blocks of ranged GETs, made for the block size of
    /// the first such GET (the mount uses one size).
    block_buffers: OnceLock<Arc<BufferPool>>,
    /// Requests and failures per operation (`bucketfs stats`).
    counters: RequestCounters,
}

impl HttpStore {
    pub fn new(config: HttpStoreConfig) -> StoreResult<HttpStore> {
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| {
            StoreError::InvalidRequest(format!("endpoint {:?} is not a URL: {e}", config.endpoint))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(StoreError::InvalidRequest(format!(
                "endpoint {:?} must start with http:// or https://",
                config.endpoint
            )));
        }
        let host = url.host_str().ok_or_else(|| {
            StoreError::InvalidRequest(format!("endpoint {:?} has no host", config.endpoint))
        })?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if config.bucket.is_empty() || config.bucket.contains('/') {
            return Err(StoreError::InvalidRequest(format!(
                "bucket name {:?} is not valid",
                config.bucket
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("bucketfs/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            builder = builder.tls_certs_merge(read_ca_file(path)?);
        }
        if config.accept_invalid_certs {
            tracing::warn!(
                "TLS certificates of {} are NOT verified (no_check_certificate): anyone on the path can read and change the traffic",
                config.endpoint
            );
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::InvalidRequest(format!("HTTP client: {e}")))?;
        Ok(HttpStore {
            client,
            signer: Signer::new(config.dialect.signature, config.region),
            dialect: config.dialect,
            bucket: config.bucket,
            scheme: url.scheme().to_string(),
            authority,
            path_style: config.path_style,
            credentials: parking_lot::RwLock::new(config.credentials),
            retry: config.retry,
            list_v1: AtomicBool::new(false),
            block_buffers: OnceLock::new(),
            counters: RequestCounters::default(),
        })
    }

    /// Replaces the credentials (temporary credentials renewed before expiry).
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.write() = credentials;
    }

    /// Replaces the retry policy (the mount probes with fewer attempts, then
    /// keeps the same client, and its open connection, for the mount).
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// Replaces the dialect's capabilities with what the bucket probe found.
    pub fn apply_bucket_info(&mut self, info: &BucketInfo) {
        self.dialect = self.dialect.clone().with_bucket_info(info);
    }

    /// Host and path for a key (or the bucket itself).
    fn address(&self, key: Option<&str>) -> StoreResult<(String, String)> {
        let encoded_key = match key {
            None => String::new(),
            Some(k) => encode_key(k)?,
        };
        Ok(if self.path_style {
            (
                self.authority.clone(),
                format!("/{}/{encoded_key}", self.bucket),
            )
        } else {
            (
                format!("{}.{}", self.bucket, self.authority),
                format!("/{encoded_key}"),
            )
        })
    }

    /// Sends `call` once.
    async fn attempt(&self, call: &Call) -> StoreResult<Reply> {
        let result = self.send(call).await;
        self.counters.record(
            call.op,
            result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
        );
        result
    }

    /// The URL and the signed request parts of `call`, and its body's
    /// length.
    fn signed(&self, call: &Call) -> StoreResult<(String, RequestParts, u64)> {
        let (host, path) = self.address(call.key.as_deref())?;
        let mut parts = RequestParts {
            method: call.method.as_str().to_string(),
            bucket: Some(self.bucket.clone()),
            key: call.key.clone(),
            path: path.clone(),
            query: call.query.clone(),
            headers: call.headers.clone(),
        };
        parts.set_header("host", host.clone());
        // Content-Length is signed by some algorithms (COS), so it is named
        // only when the transport is sure to send it: hyper omits it for an
        // empty body.
        let body_len = match &call.streamed {
            Some((_, range, _)) => range.end - range.start,
            None => call.body.len() as u64,
        };
        if body_len > 0 {
            parts.set_header("content-length", body_len.to_string());
        }
        let now = unix_now();
        // Only SigV4 signs the payload's hash: hashing every body for the
        // other algorithms would cost CPU for nothing.
        let payload_hash = match (&call.streamed, self.dialect.signature) {
            (Some((_, _, digests)), SignatureVersion::S3V4) => {
                digests.sha256_hex.clone().unwrap_or_default()
            }
            (None, SignatureVersion::S3V4) => super::sign::sha256_hex(&call.body),
            _ => String::new(),
        };
        {
            let creds = self.credentials.read();
            self.signer.sign(&mut parts, &creds, now, &payload_hash);
        }
        let mut url = format!("{}://{host}{path}", self.scheme);
        if !call.query.is_empty() {
            url.push('?');
            url.push_str(&query_string(&call.query));
        }
        Ok((url, parts, body_len))
    }

    /// One request, uncounted.
    async fn send(&self, call: &Call) -> StoreResult<Reply> {
        let (url, parts, body_len) = self.signed(call)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &parts.headers {
            if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case("content-length") {
                continue; // the transport writes these itself, with the same values
            }
            let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| StoreError::InvalidRequest(format!("bad header name {name:?}")))?;
            let value = HeaderValue::from_bytes(value.as_bytes())
                .map_err(|_| StoreError::InvalidRequest(format!("bad value for header {name}")))?;
            headers.append(name, value);
        }
        let body = match &call.streamed {
            Some((source, range, digests)) => {
                // A streamed body has no length of its own for the
                // transport: say it, or it would be sent chunked.
                headers.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(body_len));
                reqwest::Body::wrap(SourceBody::new(
                    source.clone(),
                    range.clone(),
                    digests.md5_base64.clone(),
                ))
            }
            None => reqwest::Body::from(call.body.clone()),
        };
        let response = self
            .client
            .request(call.method.clone(), &url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let declared_len = response.content_length();
        if status == 200
            && call.method == reqwest::Method::GET
            && let Some(asked) = asked_range(call)
            // A whole object no longer than the range from 0 is the range.
            && !(asked.start == 0 && declared_len.is_some_and(|len| len <= asked.end))
        {
            // Subtle case 6: the body is not read.
            return Err(whole_object_for_range(&asked, declared_len));
        }
        // Error bodies are XML whatever was asked for.
        let limit = match status {
            200..300 => call.body_limit,
            _ => MAX_UNSIZED_BODY,
        };
        if let Some(len) = declared_len
            && call.method != reqwest::Method::HEAD
            && len > limit
        {
            // Not read: the connection is dropped with the response.
            return Err(too_long(len, limit));
        }
        let (body, blocks) = match call.block_size {
            Some(size) if (200..300).contains(&status) => {
                let pool = self.block_buffers.get_or_init(|| BufferPool::new(size));
                (
                    Bytes::new(),
                    read_blocks(response, size, Some(pool), limit).await?,
                )
            }
            _ => (read_capped(response, limit).await?, Vec::new()),
        };
        let received: u64 = (body.len() + blocks.iter().map(Bytes::len).sum::<usize>()) as u64;
        if let Some(len) = declared_len
            && call.method != reqwest::Method::HEAD
            && received != len
        {
            return Err(StoreError::IncompleteBody(format!(
                "{received} of {len} bytes"
            )));
        }
        let reply = Reply {
            headers,
            body,
            blocks,
        };
        if (200..300).contains(&status) {
            if call.error_in_body && xml::root_element(reply.text()?) == Some("Error") {
                return Err(self.error_for(call, status, &reply));
            }
            return Ok(reply);
        }
        Err(self.error_for(call, status, &reply))
    }

    /// Maps an error response to a [`StoreError`].
    fn error_for(&self, call: &Call, status: u16, reply: &Reply) -> StoreError {
        let body = std::str::from_utf8(&reply.body).unwrap_or_default();
        let details = xml::parse_error(
            status,
            body,
            self.response_header(reply, "request-id").as_deref(),
        );
        let key = call.key.clone().unwrap_or_default();
        match (status, details.code.as_str()) {
            (_, "NoSuchBucket") => StoreError::NoSuchBucket {
                bucket: self.bucket.clone(),
            },
            (404, "") if call.op == Operation::HeadBucket => StoreError::NoSuchBucket {
                bucket: self.bucket.clone(),
            },
            (_, "NoSuchUpload") => StoreError::NoSuchUpload {
                upload_id: upload_id_of(call),
            },
            (_, "NoSuchKey") | (404, "") => StoreError::NoSuchKey { key },
            (_, "PositionNotEqualToLength") => StoreError::PositionNotEqualToLength {
                position: position_of(call),
                next_position: self
                    .response_header(reply, "next-append-position")
                    .and_then(|v| v.trim().parse().ok()),
            },
            (_, "ObjectNotAppendable") => StoreError::ObjectNotAppendable { key },
            (_, "FileAlreadyExists") => StoreError::AlreadyExists { key },
            (
                _,
                "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "InvalidSecurityToken"
                | "ExpiredToken"
                | "SecurityTokenExpired",
            ) => StoreError::BadCredentials(details),
            (403, _) => StoreError::AccessDenied(details),
            (412, _) | (_, "PreconditionFailed") => StoreError::PreconditionFailed(details),
            (416, _) | (_, "InvalidRange") => StoreError::InvalidRange(details),
            _ => StoreError::Service(details),
        }
    }

    /// A vendor response header (`x-oss-<suffix>`, ...), under each prefix the
    /// dialect answers with.
    fn response_header(&self, reply: &Reply, suffix: &str) -> Option<String> {
        self.dialect
            .response_prefixes()
            .iter()
            .find_map(|p| reply.header(&format!("{p}{suffix}")))
            .map(str::to_string)
    }

    /// Sends `call`, retrying transient failures when the operation is
    /// idempotent; a non-idempotent call gets one attempt.
    /// A GetObject, its Content-Range checked against the bytes received
    /// and the range asked for; the body whole or in `block_size` buffers.
    async fn ranged_get(
        &self,
        req: &GetRequest,
        block_size: Option<usize>,
    ) -> StoreResult<(BlockResponse, Reply)> {
        let mut call = Call::new(Operation::GetObject, reqwest::Method::GET, Some(&req.key));
        call.block_size = block_size;
        if let Some(r) = &req.range {
            call = call.header("Range", byte_range(r)?);
            call.body_limit = r.end - r.start;
        }
        if let Some(etag) = &req.if_match {
            call = call.header("If-Match", format!("\"{etag}\""));
        }
        let reply = self.execute(&call).await?;
        let len = (reply.body.len() + reply.blocks.iter().map(Bytes::len).sum::<usize>()) as u64;
        let (range, total_size) = match reply.header("content-range").and_then(parse_content_range)
        {
            Some((a, b, total)) => (a..b + 1, total),
            None => (0..len, len),
        };
        if range.end - range.start != len {
            return Err(StoreError::IncompleteBody(format!(
                "Content-Range {range:?} but {len} bytes"
            )));
        }
        if let Some(want) = &req.range
            && (range.start != want.start || range.end > want.end)
        {
            return Err(StoreError::InvalidResponse(format!(
                "asked for bytes {want:?}, got {range:?}"
            )));
        }
        let meta = BlockResponse {
            blocks: Vec::new(),
            range,
            total_size,
            etag: xml::unquote_etag(reply.header("etag").unwrap_or_default()),
        };
        Ok((meta, reply))
    }

    /// Aborts the uploads of exactly `key`, other than `keep`, initiated at
    /// or after `since` (server clock): those a CreateMultipartUpload whose
    /// answer was lost left open. Best effort, page by page (the memory
    /// used does not grow with how many there are); what cannot be aborted
    /// is logged for the bucket's lifecycle rule to collect.
    async fn abort_lost_uploads(&self, key: &str, keep: &str, since: std::time::SystemTime) {
        let mut marker: Option<(String, String)> = None;
        loop {
            let page = match self.list_multipart_uploads(key, marker.as_ref()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(%key, "cannot list multipart uploads to abort one a lost answer left open: {e}");
                    return;
                }
            };
            for lost in &page.uploads {
                let ours = lost.key == key
                    && lost.upload_id != keep
                    && lost.initiated.is_some_and(|t| t >= since);
                if !ours {
                    continue;
                }
                match self.abort_multipart_upload(key, &lost.upload_id).await {
                    Ok(()) | Err(StoreError::NoSuchUpload { .. }) => {
                        tracing::debug!(%key, upload_id = %lost.upload_id, "aborted an upload a lost answer left open")
                    }
                    Err(e) => {
                        tracing::warn!(%key, upload_id = %lost.upload_id, "cannot abort an upload a lost answer left open: {e}")
                    }
                }
            }
            // Keys past `key` sort after it: nothing more of ours.
            match page.next {
                Some(next) if next.0 == key => marker = Some(next),
                _ => return,
            }
        }
    }

    async fn execute(&self, call: &Call) -> StoreResult<Reply> {
        let policy = if call.op.is_idempotent() {
            self.retry
        } else {
            RetryPolicy::none()
        };
        self.execute_with(call, policy).await
    }

    async fn execute_with(&self, call: &Call, policy: RetryPolicy) -> StoreResult<Reply> {
        self.execute_counting(call, policy).await.0
    }

    /// [`Self::execute_with`], also saying how many attempts were sent.
    async fn execute_counting(
        &self,
        call: &Call,
        policy: RetryPolicy,
    ) -> (StoreResult<Reply>, u32) {
        let mut attempt = 1;
        loop {
            match self.attempt(call).await {
                Ok(reply) => return (Ok(reply), attempt),
                Err(err) if is_retryable(&err) && policy.allows_another(attempt) => {
                    let wait = policy.delay(attempt, fastrand::f64());
                    tracing::debug!(op = call.op.name(), attempt, ?wait, error = %err, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return (Err(err), attempt),
            }
        }
    }

    fn attribute_headers(&self, mut call: Call, attrs: &ObjectAttributes) -> Call {
        if let Some(ct) = &attrs.content_type {
            call = call.header("Content-Type", ct.clone());
        }
        let prefix = self.dialect.meta_prefix();
        for (name, value) in &attrs.metadata {
            call = call.header(format!("{prefix}{name}"), value.clone());
        }
        call
    }

    /// The headers naming a server-side copy's source (and its ETag
    /// condition); such responses may carry an error in a 200 body.
    fn copy_from(
        &self,
        call: Call,
        source_key: &str,
        source_if_match: Option<&str>,
    ) -> StoreResult<Call> {
        let mut call = call
            .header(
                self.dialect.header("copy-source"),
                self.copy_source(source_key)?,
            )
            .error_in_body();
        if let Some(etag) = source_if_match {
            call = call.header(
                self.dialect.header("copy-source-if-match"),
                format!("\"{etag}\""),
            );
        }
        Ok(call)
    }

    fn copy_source(&self, key: &str) -> StoreResult<String> {
        let encoded = encode_key(key)?;
        Ok(match self.dialect.copy_source {
            CopySourceForm::BucketKey => format!("/{}/{encoded}", self.bucket),
            CopySourceForm::HostKey => format!("{}.{}/{encoded}", self.bucket, self.authority),
        })
    }

    fn object_meta(&self, reply: &Reply) -> StoreResult<ObjectMeta> {
        let size = reply
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| StoreError::InvalidResponse("HEAD without Content-Length".into()))?;
        let mut metadata = Metadata::new();
        for prefix in self.dialect.response_prefixes() {
            let meta_prefix = format!("{prefix}meta-");
            for (name, value) in &reply.headers {
                if let Some(short) = name.as_str().strip_prefix(&meta_prefix) {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    metadata.entry(short.to_string()).or_insert(value);
                }
            }
        }
        Ok(ObjectMeta {
            size,
            etag: xml::unquote_etag(reply.header("etag").unwrap_or_default()),
            last_modified: reply
                .header("last-modified")
                .and_then(|v| httpdate::parse_http_date(v).ok()),
            content_type: reply.header("content-type").map(str::to_string),
            metadata,
            object_type: self
                .response_header(reply, "object-type")
                .map(|t| ObjectType::parse(&t))
                .unwrap_or_default(),
            crc64: self.crc64(reply),
            next_append_position: self
                .response_header(reply, "next-append-position")
                .and_then(|v| v.trim().parse().ok()),
        })
    }

    fn crc64(&self, reply: &Reply) -> Option<u64> {
        self.dialect
            .crc64_header
            .and_then(|h| reply.header(h))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Checks a returned CRC64 against the bytes sent (where the dialect has one).
    fn verify_crc64(&self, reply: &Reply, body: &[u8]) -> StoreResult<Option<u64>> {
        let Some(returned) = self.crc64(reply) else {
            return Ok(None);
        };
        let computed = crc64(body);
        if computed != returned {
            return Err(StoreError::Integrity(format!(
                "server CRC64 {returned} differs from the uploaded data's {computed}"
            )));
        }
        Ok(Some(returned))
    }

    async fn list_v2(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let mut call =
            Call::new(Operation::ListObjectsV2, reqwest::Method::GET, None).query("list-type", "2");
        call = list_common_params(call, req);
        match &req.continuation {
            Some(ListContinuation::Token(t)) => call = call.query("continuation-token", t.clone()),
            Some(ListContinuation::Marker(m)) => call = call.query("start-after", m.clone()),
            None => {}
        }
        if let Some(s) = &req.start_after
            && !matches!(req.continuation, Some(ListContinuation::Marker(_)))
        {
            call = call.query("start-after", s.clone());
        }
        let reply = self.execute(&call).await?;
        let page = xml::parse_list(reply.text()?, true, self.dialect.list_plus_is_space)?;
        if page.next.is_some() && page.next == req.continuation {
            return Err(StoreError::InvalidResponse(
                "ListObjectsV2 answered with the continuation token it was given: the listing would never end".into(),
            ));
        }
        Ok(page)
    }

    async fn list_v1(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let mut call = Call::new(Operation::ListObjects, reqwest::Method::GET, None);
        call = list_common_params(call, req);
        let marker = match &req.continuation {
            Some(ListContinuation::Marker(m)) => Some(m.clone()),
            Some(ListContinuation::Token(_)) => {
                return Err(StoreError::InvalidRequest(
                    "a ListObjectsV2 token cannot continue a V1 listing".into(),
                ));
            }
            None => req.start_after.clone(),
        };
        if let Some(m) = &marker {
            call = call.query("marker", m.clone());
        }
        let reply = self.execute(&call).await?;
        let page = xml::parse_list(reply.text()?, false, self.dialect.list_plus_is_space)?;
        // Keys come in order, so a listing that goes on must go on past
        // where this page began; one that does not would never end (a
        // broken server, or a key that is not UTF-8 at the page's end).
        if let (Some(ListContinuation::Marker(next)), Some(from)) = (&page.next, &marker)
            && next <= from
        {
            return Err(StoreError::InvalidResponse(format!(
                "ListObjects would resume at {next:?}, not past where the page began ({from:?}): the listing would never end"
            )));
        }
        Ok(page)
    }

    /// What the server holds for `key` after an append whose outcome is
    /// unknown: `Ok(Some(next))` if it landed, `Ok(None)` if it did not.
    async fn append_outcome(&self, req: &AppendRequest) -> StoreResult<Option<u64>> {
        let expected_end = req.position + req.body.len() as u64;
        match self.head_object(&req.key).await {
            Ok(meta) if meta.size == expected_end => Ok(Some(expected_end)),
            Ok(meta) if meta.size == req.position => Ok(None),
            Ok(meta) => Err(StoreError::PositionNotEqualToLength {
                position: req.position,
                next_position: Some(meta.size),
            }),
            Err(StoreError::NoSuchKey { .. }) if req.position == 0 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The certificates of the PEM bundle at `path`; none is an error.
fn read_ca_file(path: &std::path::Path) -> StoreResult<Vec<reqwest::Certificate>> {
    let bad =
        |why: String| StoreError::InvalidRequest(format!("ca_file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Percent-encodes a key for the URL path (subtle case 4 of the module doc).
fn encode_key(key: &str) -> StoreResult<String> {
    if key.is_empty() || key == "." || key == ".." {
        return Err(StoreError::InvalidRequest(format!(
            "object key {key:?} cannot be addressed"
        )));
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        Ok(encode::strict(key))
    } else {
        Ok(encode::path(key))
    }
}

fn query_string(query: &[(String, Option<String>)]) -> String {
    query
        .iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{}={}", encode::strict(n), encode::strict(v)),
            None => encode::strict(n),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn list_common_params(mut call: Call, req: &ListRequest) -> Call {
    if !req.prefix.is_empty() {
        call = call.query("prefix", req.prefix.clone());
    }
    if let Some(d) = &req.delimiter {
        call = call.query("delimiter", d.clone());
    }
    call.query(
        "max-keys",
        req.max_keys.unwrap_or(1000).min(1000).to_string(),
    )
    .query("encoding-type", "url")
}

fn upload_id_of(call: &Call) -> String {
    call.query
        .iter()
        .find(|(n, _)| n == "uploadId")
        .and_then(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn position_of(call: &Call) -> u64 {
    call.query
        .iter()
        .find(|(n, _)| n == "position")
        .and_then(|(_, v)| v.as_deref()?.parse().ok())
        .unwrap_or_default()
}

fn transport_error(e: reqwest::Error) -> StoreError {
    // The URL is not secret, but the full error chain says what failed
    // (DNS, refused, TLS certificate) and that is what an operator needs.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        StoreError::Timeout(msg)
    } else {
        StoreError::Transport(msg)
    }
}

/// Reads a response body into `size`-byte buffers (the last may be
/// shorter): one copy from the connection's buffers into the final ones,
/// with no body-sized buffer in between.
/// Fails past `limit` bytes.
async fn read_blocks(
    mut response: reqwest::Response,
    size: usize,
    pool: Option<&Arc<BufferPool>>,
    limit: u64,
) -> StoreResult<Vec<Bytes>> {
    let size = size.max(1);
    let mut blocks = Vec::new();
    let mut current = FillingBlock::new(pool, size);
    let mut received = 0u64;
    while let Some(mut chunk) = response.chunk().await.map_err(body_error)? {
        received += chunk.len() as u64;
        if received > limit {
            return Err(too_long(received, limit));
        }
        while !chunk.is_empty() {
            let take = (size - current.len()).min(chunk.len());
            current.extend_from_slice(&chunk.split_to(take));
            if current.len() == size {
                blocks
                    .push(std::mem::replace(&mut current, FillingBlock::new(pool, size)).freeze());
            }
        }
    }
    if !current.is_empty() {
        blocks.push(current.freeze());
    }
    Ok(blocks)
}

/// Reads a whole body of at most `limit` bytes.
async fn read_capped(mut response: reqwest::Response, limit: u64) -> StoreResult<Bytes> {
    let declared = response.content_length().unwrap_or(0).min(limit);
    let mut body = bytes::BytesMut::with_capacity(declared as usize);
    while let Some(chunk) = response.chunk().await.map_err(body_error)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_long((body.len() + chunk.len()) as u64, limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn too_long(len: u64, limit: u64) -> StoreError {
    StoreError::InvalidResponse(format!(
        "a body of {len} bytes or more where at most {limit} were expected"
    ))
}

fn body_error(e: reqwest::Error) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout(e.to_string())
    } else {
        StoreError::IncompleteBody(e.to_string())
    }
}

/// The range a GET asked for (`Range: bytes=a-b`), end exclusive.
fn asked_range(call: &Call) -> Option<std::ops::Range<u64>> {
    let (_, value) = call
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("range"))?;
    let (a, b) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some(a.parse().ok()?..b.parse::<u64>().ok()? + 1)
}

/// What a 200 (whole object) answer to a ranged GET means (subtle case 6).
fn whole_object_for_range(asked: &std::ops::Range<u64>, total: Option<u64>) -> StoreError {
    match total {
        Some(total) if total <= asked.start => StoreError::InvalidRange(ServiceDetails {
            status: 200,
            code: "InvalidRange".into(),
            message: format!(
                "bytes {}-{} asked of a {total}-byte object; the server sent the whole object instead",
                asked.start,
                asked.end - 1
            ),
            request_id: String::new(),
        }),
        _ => StoreError::InvalidResponse(format!(
            "a GET of bytes {}-{} was answered with the whole object ({} bytes): the server ignored the Range header",
            asked.start,
            asked.end - 1,
            total.map_or("unknown".to_string(), |t| t.to_string())
        )),
    }
}

/// The part an UploadPart reply describes.
fn part_etag(reply: &Reply, part_number: u32) -> StoreResult<CompletedPart> {
    let etag = xml::unquote_etag(reply.header("etag").unwrap_or_default());
    if etag.is_empty() {
        return Err(StoreError::InvalidResponse(
            "UploadPart returned no ETag".into(),
        ));
    }
    Ok(CompletedPart { part_number, etag })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn content_md5(body: &[u8]) -> String {
    use md5::Digest;
    base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body))
}

/// A `Range` header value for `r` (end exclusive), refusing an empty range
/// (HTTP cannot express one).
fn byte_range(r: &std::ops::Range<u64>) -> StoreResult<String> {
    if r.start >= r.end {
        return Err(StoreError::InvalidRequest(format!("empty range {r:?}")));
    }
    Ok(format!("bytes={}-{}", r.start, r.end - 1))
}

/// Parses `Content-Range: bytes a-b/total`.
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

#[async_trait]
impl ObjectStore for HttpStore {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn request_counts(&self) -> std::collections::BTreeMap<String, RequestCount> {
        self.counters.snapshot()
    }

    async fn head_bucket(&self) -> StoreResult<BucketInfo> {
        match self.dialect.bucket_probe {
            BucketProbe::OssBucketInfo => {
                let call =
                    Call::new(Operation::HeadBucket, reqwest::Method::GET, None).flag("bucketInfo");
                let reply = self.execute(&call).await?;
                xml::parse_oss_bucket_info(reply.text()?)
            }
            BucketProbe::HeadBucket => {
                let call = Call::new(Operation::HeadBucket, reqwest::Method::HEAD, None);
                let reply = self.execute(&call).await?;
                Ok(BucketInfo {
                    region: self
                        .response_header(&reply, "bucket-location")
                        .or_else(|| self.response_header(&reply, "bucket-region")),
                    obs_pfs: self
                        .response_header(&reply, "fs-file-interface")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("enabled")),
                    oss_hierarchical_namespace: false,
                })
            }
        }
    }

    async fn list_objects(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let use_v1 = !self.dialect.capabilities.list_v2 || self.list_v1.load(Ordering::Relaxed);
        if use_v1 {
            return self.list_v1(req).await;
        }
        match self.list_v2(req).await {
            Err(StoreError::Service(d))
                if matches!(d.status, 400 | 405 | 501)
                    && matches!(
                        d.code.as_str(),
                        "NotImplemented"
                            | "InvalidArgument"
                            | "InvalidRequest"
                            | "MethodNotAllowed"
                    ) =>
            {
                tracing::info!("server lacks ListObjectsV2 ({d}); using ListObjects V1");
            }
            Err(StoreError::InvalidResponse(msg)) if msg.contains("NextContinuationToken") => {
                tracing::info!("server ignored list-type=2; using ListObjects V1");
            }
            other => return other,
        }
        self.list_v1.store(true, Ordering::Relaxed);
        self.list_v1(req).await
    }

    async fn head_object(&self, key: &str) -> StoreResult<ObjectMeta> {
        let call = Call::new(Operation::HeadObject, reqwest::Method::HEAD, Some(key));
        let reply = self.execute(&call).await?;
        self.object_meta(&reply)
    }

    async fn get_object(&self, req: &GetRequest) -> StoreResult<GetResponse> {
        let (meta, reply) = self.ranged_get(req, None).await?;
        Ok(GetResponse {
            body: reply.body,
            range: meta.range,
            total_size: meta.total_size,
            etag: meta.etag,
        })
    }

    async fn get_object_blocks(
        &self,
        req: &GetRequest,
        block_size: usize,
    ) -> StoreResult<BlockResponse> {
        let (meta, reply) = self.ranged_get(req, Some(block_size)).await?;
        Ok(BlockResponse {
            blocks: reply.blocks,
            range: meta.range,
            total_size: meta.total_size,
            etag: meta.etag,
        })
    }

    async fn put_object(&self, req: &PutRequest) -> StoreResult<PutResponse> {
        let call = Call::new(Operation::PutObject, reqwest::Method::PUT, Some(&req.key))
            .header("Content-MD5", content_md5(&req.body))
            .body(req.body.clone());
        let call = self.attribute_headers(call, &req.attributes);
        let reply = self.execute(&call).await?;
        Ok(PutResponse {
            etag: xml::unquote_etag(reply.header("etag").unwrap_or_default()),
            crc64: self.verify_crc64(&reply, &req.body)?,
        })
    }

    async fn append_object(&self, req: &AppendRequest) -> StoreResult<AppendResponse> {
        require(self.dialect.capabilities.append, "AppendObject")?;
        let mut call = Call::new(
            Operation::AppendObject,
            reqwest::Method::POST,
            Some(&req.key),
        )
        .flag("append")
        .query("position", req.position.to_string())
        .header("Content-MD5", content_md5(&req.body))
        .body(req.body.clone());
        if req.position == 0 {
            call = self.attribute_headers(call, &req.attributes);
        }
        let mut attempt = 1;
        loop {
            let err = match self.attempt(&call).await {
                Ok(reply) => {
                    let next_position = self
                        .response_header(&reply, "next-append-position")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(req.position + req.body.len() as u64);
                    // OSS documents the ETag of the object after the
                    // append in this answer (8.1.4 "AppendObject",
                    // examples); OBS and COS do not, so there a HEAD
                    // learns it rather than trusting a header of
                    // unknown meaning.
                    let etag = reply
                        .header("etag")
                        .filter(|_| self.dialect.provider == Provider::Oss)
                        .map(xml::unquote_etag)
                        .filter(|e| !e.is_empty());
                    return Ok(AppendResponse {
                        next_position,
                        etag,
                        crc64: self.crc64(&reply),
                    });
                }
                Err(err) if is_retryable(&err) && self.retry.allows_another(attempt) => err,
                Err(err) => return Err(err),
            };
            // The append may or may not have landed: ask before re-sending.
            tracing::debug!(key = %req.key, error = %err, "append outcome unknown; checking length");
            if let Some(next_position) = self.append_outcome(req).await? {
                return Ok(AppendResponse {
                    next_position,
                    etag: None,
                    crc64: None,
                });
            }
            tokio::time::sleep(self.retry.delay(attempt, fastrand::f64())).await;
            attempt += 1;
        }
    }

    async fn create_multipart_upload(
        &self,
        key: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<String> {
        let call = Call::new(
            Operation::CreateMultipartUpload,
            reqwest::Method::POST,
            Some(key),
        )
        .flag("uploads");
        let call = self.attribute_headers(call, attributes);
        let started = std::time::Instant::now();
        let (reply, attempts) = self.execute_counting(&call, self.retry).await;
        // The upload ID, and the server's clock when it answered.
        let created = reply.and_then(|reply| {
            let upload_id = xml::parse_initiate_multipart(reply.text()?)?;
            let date = reply
                .header("date")
                .and_then(|d| httpdate::parse_http_date(d).ok());
            Ok((upload_id, date))
        });
        if attempts > 1 {
            // An earlier attempt may have created an upload whose answer
            // was lost; only a listing can find it.
            let (keep, server_now) = match &created {
                Ok((upload_id, date)) => (upload_id.as_str(), *date),
                Err(_) => ("", None),
            };
            let since = server_now
                .unwrap_or_else(std::time::SystemTime::now)
                .checked_sub(started.elapsed() + LOST_UPLOAD_CLOCK_SLACK)
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            self.abort_lost_uploads(key, keep, since).await;
        }
        created.map(|(upload_id, _)| upload_id)
    }

    async fn upload_part(&self, req: &UploadPartRequest) -> StoreResult<CompletedPart> {
        let call = Call::new(Operation::UploadPart, reqwest::Method::PUT, Some(&req.key))
            .query("partNumber", req.part_number.to_string())
            .query("uploadId", req.upload_id.clone())
            .header("Content-MD5", content_md5(&req.body))
            .body(req.body.clone());
        let reply = self.execute(&call).await?;
        self.verify_crc64(&reply, &req.body)?;
        part_etag(&reply, req.part_number)
    }

    async fn upload_part_streamed(&self, req: &StreamedPartRequest) -> StoreResult<CompletedPart> {
        let with_sha256 = self.dialect.signature == SignatureVersion::S3V4;
        let mut attempt = 1;
        loop {
            // Digested again on every attempt (streamed.rs, subtle case 2).
            let (source, range) = (req.source.clone(), req.range.clone());
            let digests =
                tokio::task::spawn_blocking(move || digest_source(&*source, range, with_sha256))
                    .await
                    .map_err(|e| StoreError::Transport(format!("digest task failed: {e}")))?
                    .map_err(|e| StoreError::Transport(format!("reading the part's data: {e}")))?;
            let mut call = Call::new(Operation::UploadPart, reqwest::Method::PUT, Some(&req.key))
                .query("partNumber", req.part_number.to_string())
                .query("uploadId", req.upload_id.clone())
                .header("Content-MD5", digests.md5_base64.clone());
            let crc = digests.crc64;
            call.streamed = Some((req.source.clone(), req.range.clone(), digests));
            match self.attempt(&call).await {
                Ok(reply) => {
                    if let Some(returned) = self.crc64(&reply)
                        && returned != crc
                    {
                        return Err(StoreError::Integrity(format!(
                            "server CRC64 {returned} differs from the uploaded data's {crc}"
                        )));
                    }
                    return part_etag(&reply, req.part_number);
                }
                Err(err) if is_retryable(&err) && self.retry.allows_another(attempt) => {
                    let wait = self.retry.delay(attempt, fastrand::f64());
                    tracing::debug!(op = "UploadPart", attempt, ?wait, error = %err, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn upload_part_copy(&self, req: &UploadPartCopyRequest) -> StoreResult<CompletedPart> {
        require(self.dialect.capabilities.upload_part_copy, "UploadPartCopy")?;
        let mut call = Call::new(
            Operation::UploadPartCopy,
            reqwest::Method::PUT,
            Some(&req.key),
        )
        .query("partNumber", req.part_number.to_string())
        .query("uploadId", req.upload_id.clone());
        call = self.copy_from(call, &req.source_key, req.source_if_match.as_deref())?;
        if let Some(r) = &req.source_range {
            call = call.header(self.dialect.header("copy-source-range"), byte_range(r)?);
        }
        let reply = self.execute(&call).await?;
        Ok(CompletedPart {
            part_number: req.part_number,
            etag: xml::parse_result_etag(reply.text()?, "CopyPartResult")?,
        })
    }

    async fn complete_multipart_upload(
        &self,
        req: &CompleteMultipartRequest,
    ) -> StoreResult<PutResponse> {
        let body = Bytes::from(xml::complete_multipart_body(&req.parts));
        let call = Call::new(
            Operation::CompleteMultipartUpload,
            reqwest::Method::POST,
            Some(&req.key),
        )
        .query("uploadId", req.upload_id.clone())
        .header("Content-Type", "application/xml")
        .body(body)
        .error_in_body();
        let mut attempt = 1;
        loop {
            let err = match self.attempt(&call).await {
                Ok(reply) => {
                    return Ok(PutResponse {
                        etag: xml::parse_result_etag(
                            reply.text()?,
                            "CompleteMultipartUploadResult",
                        )?,
                        crc64: self.crc64(&reply),
                    });
                }
                Err(err) if is_retryable(&err) && self.retry.allows_another(attempt) => err,
                Err(err) => return Err(err),
            };
            // Did the completion land? If the upload is gone and the object
            // carries the multipart ETag of these parts, it did.
            tracing::debug!(key = %req.key, error = %err, "completion outcome unknown; checking");
            match self.list_parts(&req.key, &req.upload_id).await {
                Ok(_) => {} // upload still open: completing again is safe
                Err(StoreError::NoSuchUpload { .. }) => {
                    let meta = self.head_object(&req.key).await?;
                    let expected = multipart_etag(&req.parts);
                    if expected.is_some_and(|e| e.eq_ignore_ascii_case(&meta.etag)) {
                        return Ok(PutResponse {
                            etag: meta.etag,
                            crc64: meta.crc64,
                        });
                    }
                    return Err(StoreError::Integrity(format!(
                        "multipart upload of {:?} vanished and the object does not hold its parts ({err})",
                        req.key
                    )));
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.retry.delay(attempt, fastrand::f64())).await;
            attempt += 1;
        }
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let call = Call::new(
            Operation::AbortMultipartUpload,
            reqwest::Method::DELETE,
            Some(key),
        )
        .query("uploadId", upload_id);
        self.execute(&call).await.map(|_| ())
    }

    async fn list_multipart_uploads(
        &self,
        prefix: &str,
        marker: Option<&(String, String)>,
    ) -> StoreResult<UploadPage> {
        let mut call = Call::new(Operation::ListMultipartUploads, reqwest::Method::GET, None)
            .flag("uploads")
            .query("prefix", prefix);
        if let Some((key, upload_id)) = marker {
            call = call
                .query("key-marker", key.clone())
                .query("upload-id-marker", upload_id.clone());
        }
        let reply = self.execute(&call).await?;
        xml::parse_list_uploads(reply.text()?)
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<PartSummary>> {
        let mut all = Vec::new();
        let mut marker: Option<u32> = None;
        loop {
            let mut call = Call::new(Operation::ListParts, reqwest::Method::GET, Some(key))
                .query("uploadId", upload_id);
            if let Some(m) = marker {
                call = call.query("part-number-marker", m.to_string());
            }
            let reply = self.execute(&call).await?;
            let (parts, next) = xml::parse_list_parts(reply.text()?)?;
            all.extend(parts);
            match next {
                Some(m) if Some(m) != marker => marker = Some(m),
                _ => return Ok(all),
            }
        }
    }

    async fn copy_object(&self, req: &CopyRequest) -> StoreResult<PutResponse> {
        let mut call = Call::new(
            Operation::CopyObject,
            reqwest::Method::PUT,
            Some(&req.dest_key),
        );
        call = self.copy_from(call, &req.source_key, req.source_if_match.as_deref())?;
        let (copy, replace) = self.dialect.metadata_directive;
        match &req.directive {
            MetadataDirective::Copy => {
                call = call.header(self.dialect.header("metadata-directive"), copy);
            }
            MetadataDirective::Replace(attrs) => {
                call = call.header(self.dialect.header("metadata-directive"), replace);
                call = self.attribute_headers(call, attrs);
            }
        }
        let reply = self.execute(&call).await?;
        Ok(PutResponse {
            etag: xml::parse_result_etag(reply.text()?, "CopyObjectResult")?,
            crc64: self.crc64(&reply),
        })
    }

    async fn delete_object(&self, key: &str) -> StoreResult<()> {
        let call = Call::new(Operation::DeleteObject, reqwest::Method::DELETE, Some(key));
        match self.execute(&call).await {
            Ok(_) | Err(StoreError::NoSuchKey { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_objects(&self, keys: &[String]) -> StoreResult<DeleteObjectsResult> {
        let mut result = DeleteObjectsResult::default();
        for batch in keys.chunks(DELETE_BATCH_MAX) {
            let body = Bytes::from(xml::delete_objects_body(batch));
            let call = Call::new(Operation::DeleteObjects, reqwest::Method::POST, None)
                .flag("delete")
                .header("Content-MD5", content_md5(&body))
                .header("Content-Type", "application/xml")
                .body(body);
            let reply = self.execute(&call).await?;
            let page = xml::parse_delete_result(reply.text()?)?;
            result.deleted.extend(page.deleted);
            result.errors.extend(page.errors);
        }
        Ok(result)
    }

    async fn rename_object(&self, source_key: &str, dest_key: &str) -> StoreResult<()> {
        let call = match self.dialect.rename {
            RenameForm::None => return Err(StoreError::Unsupported("native rename")),
            RenameForm::OssRenameSource => Call::new(
                Operation::RenameObject,
                reqwest::Method::POST,
                Some(dest_key),
            )
            .flag("x-oss-rename")
            .header("x-oss-rename-source", encode_key(source_key)?),
            RenameForm::ObsNameParam => Call::new(
                Operation::RenameObject,
                reqwest::Method::POST,
                Some(source_key),
            )
            .flag("rename")
            .query("name", dest_key),
        };
        match self.execute_with(&call, RetryPolicy::none()).await {
            Ok(_) => Ok(()),
            // After a lost response, a rename that landed shows as a missing
            // source and a present destination.
            Err(err) if is_retryable(&err) => {
                let source_gone = matches!(
                    self.head_object(source_key).await,
                    Err(StoreError::NoSuchKey { .. })
                );
                let dest_there = self.head_object(dest_key).await.is_ok();
                if source_gone && dest_there {
                    Ok(())
                } else {
                    Err(err)
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn modify_object(&self, key: &str, position: u64, body: Bytes) -> StoreResult<()> {
        require(
            self.dialect.capabilities.modify_at_offset,
            "modify at offset",
        )?;
        // Writing the same bytes at the same offset twice has one effect, so
        // unlike append this may be re-sent.
        let call = Call::new(Operation::ModifyObject, reqwest::Method::PUT, Some(key))
            .flag("modify")
            .query("position", position.to_string())
            .header("Content-MD5", content_md5(&body))
            .body(body);
        self.execute_with(&call, self.retry).await.map(|_| ())
    }

    async fn truncate_object(&self, key: &str, length: u64) -> StoreResult<()> {
        require(self.dialect.capabilities.truncate, "truncate")?;
        let call = Call::new(Operation::TruncateObject, reqwest::Method::PUT, Some(key))
            .query("length", length.to_string())
            .flag("truncate");
        self.execute(&call).await.map(|_| ())
    }

    async fn put_symlink(
        &self,
        key: &str,
        target: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<()> {
        require(self.dialect.capabilities.symlink, "symlink")?;
        let target = if self.dialect.symlink_target_encoded {
            encode::strict(target)
        } else {
            target.to_string()
        };
        let call = Call::new(Operation::PutSymlink, reqwest::Method::PUT, Some(key))
            .flag("symlink")
            .header(self.dialect.header("symlink-target"), target);
        let call = self.attribute_headers(call, attributes);
        self.execute(&call).await.map(|_| ())
    }

    async fn get_symlink(&self, key: &str) -> StoreResult<String> {
        require(self.dialect.capabilities.symlink, "symlink")?;
        let call =
            Call::new(Operation::GetSymlink, reqwest::Method::GET, Some(key)).flag("symlink");
        let reply = self.execute(&call).await?;
        let raw = self
            .response_header(&reply, "symlink-target")
            .ok_or_else(|| {
                StoreError::InvalidResponse("GetSymlink without a target header".into())
            })?;
        Ok(if self.dialect.symlink_target_encoded {
            encode::decode(&raw)
        } else {
            raw
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a server sees of `call` sent by `store`: the request as the
    /// emulator rebuilds it from the wire (key from the raw path, query
    /// decoded), checked against the store's own credentials.
    fn server_accepts(store: &HttpStore, call: &Call) -> Result<(), String> {
        let (url, parts, _) = store.signed(call).map_err(|e| e.to_string())?;
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
        let host = parts.header("host").unwrap_or_default().to_string();
        let target = crate::emulator::wire::target(&host, parsed.path());
        if target.key != call.key {
            return Err(format!("key {:?} arrived as {:?}", call.key, target.key));
        }
        let query = crate::emulator::wire::query_pairs(parsed.query().unwrap_or_default());
        if query != call.query {
            return Err(format!("query {:?} arrived as {query:?}", call.query));
        }
        let received = RequestParts {
            method: parts.method.clone(),
            bucket: target.bucket,
            key: target.key,
            path: parsed.path().to_string(),
            query,
            headers: parts.headers.clone(),
        };
        let creds = store.credentials.read().clone();
        let obs = store.dialect.provider == super::super::Provider::Obs;
        super::super::sign::verify(&received, obs, |_| Some(creds.clone()))
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Keys and query values of any characters are signed as the
        /// server will see them, in every signature version and both
        /// addressing styles.
        #[test]
        fn any_key_and_query_is_signed_as_the_server_sees_it(
            key in "[^\\x00]{1,40}",
            value in "\\PC{0,20}",
            version in prop::sample::select(SignatureVersion::ALL.to_vec()),
            path_style in any::<bool>(),
        ) {
            prop_assume!(encode_key(&key).is_ok());
            let provider = match version {
                SignatureVersion::S3V4 | SignatureVersion::S3V2 => super::super::Provider::S3,
                SignatureVersion::OssV1 | SignatureVersion::OssV4 => super::super::Provider::Oss,
                SignatureVersion::Obs | SignatureVersion::ObsV2 => super::super::Provider::Obs,
                SignatureVersion::Cos => super::super::Provider::Cos,
            };
            let dialect = Dialect::new(provider).with_signature(version);
            let endpoint = if path_style { "http://127.0.0.1:9000" } else { "https://example.com" };
            let mut config = HttpStoreConfig::new(endpoint, "bkt", dialect, Credentials::new("AK", "SK"));
            config.path_style = path_style;
            config.region = "local".into();
            let store = HttpStore::new(config).unwrap();
            let call = Call::new(Operation::PutObject, reqwest::Method::PUT, Some(&key))
                .query("x-odd", value.clone())
                .header("Content-Type", "text/plain");
            prop_assert_eq!(server_accepts(&store, &call), Ok(()));
            let listing = Call::new(Operation::ListObjectsV2, reqwest::Method::GET, None)
                .query("list-type", "2")
                .query("prefix", key.clone())
                .query("start-after", value);
            prop_assert_eq!(server_accepts(&store, &listing), Ok(()));
        }
    }

    fn store(endpoint: &str, path_style: bool) -> StoreResult<HttpStore> {
        let dialect = Dialect::new(super::super::Provider::S3);
        let mut config = HttpStoreConfig::new(endpoint, "bkt", dialect, Credentials::new("a", "b"));
        config.path_style = path_style;
        HttpStore::new(config)
    }

    #[test]
    fn virtual_hosted_and_path_style_addresses() {
        let virtual_hosted = store("https://oss-cn-hangzhou.aliyuncs.com", false).unwrap();
        assert_eq!(
            virtual_hosted.address(Some("a b/c")).unwrap(),
            (
                "bkt.oss-cn-hangzhou.aliyuncs.com".to_string(),
                "/a%20b/c".to_string()
            )
        );
        assert_eq!(
            virtual_hosted.address(None).unwrap(),
            (
                "bkt.oss-cn-hangzhou.aliyuncs.com".to_string(),
                "/".to_string()
            )
        );
        let path_style = store("http://127.0.0.1:9000", true).unwrap();
        assert_eq!(
            path_style.address(Some("k")).unwrap(),
            ("127.0.0.1:9000".to_string(), "/bkt/k".to_string())
        );
        assert_eq!(path_style.address(None).unwrap().1, "/bkt/");
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("bucketfs-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for (path, why) in [
            (dir.join("missing.pem"), "No such file"),
            (empty, "no PEM certificate"),
        ] {
            let mut config = HttpStoreConfig::new(
                "https://example.com",
                "bkt",
                Dialect::new(super::super::Provider::S3),
                Credentials::new("a", "b"),
            );
            config.ca_file = Some(path.clone());
            let err = HttpStore::new(config).unwrap_err().to_string();
            assert!(
                err.contains("ca_file") && err.contains(why),
                "{}: {err}",
                path.display()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_endpoints_are_refused_with_a_reason() {
        for (endpoint, why) in [
            ("oss-cn-hangzhou.aliyuncs.com", "not a URL"),
            ("ftp://example.com", "http:// or https://"),
        ] {
            let err = store(endpoint, false).unwrap_err().to_string();
            assert!(err.contains(why), "{endpoint}: {err}");
        }
    }

    #[test]
    fn keys_with_dot_segments_keep_their_slashes_encoded() {
        assert_eq!(encode_key("a b/c").unwrap(), "a%20b/c");
        assert_eq!(
            encode_key("odd//path/./x..y").unwrap(),
            "odd%2F%2Fpath%2F.%2Fx..y"
        );
        assert_eq!(encode_key("a/../b").unwrap(), "a%2F..%2Fb");
        assert!(encode_key("..").is_err());
        assert!(encode_key("").is_err());
    }

    #[test]
    fn query_strings_encode_values_and_write_flags_bare() {
        let q = vec![
            ("append".to_string(), None),
            ("position".to_string(), Some("10".to_string())),
            ("prefix".to_string(), Some("a b/c+d".to_string())),
        ];
        assert_eq!(query_string(&q), "append&position=10&prefix=a%20b%2Fc%2Bd");
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}
