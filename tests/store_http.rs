//! The HTTP object-store client against a scripted HTTP server on 127.0.0.1.
//!
//! The server (below) answers each request with whatever the test's responder
//! returns, including faults a real server produces: 5xx/SlowDown, a reset
//! connection, a body cut short, a 200 carrying an `<Error>`. It also checks
//! every request's signature with the project's own signers, so the request
//! put on the wire (path and query encoding, headers) is the request that was
//! signed.

use bucketfs::store::credentials::Credentials;
use bucketfs::store::http::{HttpStore, HttpStoreConfig};
use bucketfs::store::retry::RetryPolicy;
use bucketfs::store::sign::{self, RequestParts, SignatureVersion, Signer};
use bucketfs::store::*;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const ACCESS_KEY: &str = "AKIDTEST";
const SECRET_KEY: &str = "s3cr3t-Value-That-Must-Not-Leak";
const TOKEN: &str = "session-T0ken-That-Must-Not-Leak";
const BUCKET: &str = "bkt";

/// One request as the server received it.
#[derive(Clone, Debug)]
struct Received {
    method: String,
    /// Raw path, percent-encoded as sent.
    path: String,
    /// Raw query string.
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Whether the Authorization header verified against the sent request.
    signature_ok: bool,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_param(&self, name: &str) -> bool {
        self.query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    }
}

/// What the server does with a request.
enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Reset,
    /// Declare `declared` bytes but send only `body`, then close.
    Truncate { declared: usize, body: Vec<u8> },
    /// No Content-Length: the body runs until the connection closes.
    Unsized {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Respond {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

fn error_body(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>scripted {code}</Message><RequestId>REQ-{code}</RequestId></Error>"
    )
}

type Responder = Box<dyn FnMut(&Received) -> Action + Send>;

/// A scripted HTTP/1.1 server; stops when dropped.
struct MockServer {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockServer {
    async fn start(signer: Signer, responder: Responder) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let responder = Arc::new(Mutex::new(responder));
        let log = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let responder = responder.clone();
                let signer = signer.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    while let Some(req) = read_request(&mut stream, &signer).await {
                        log.lock().unwrap().push(req.clone());
                        let action = (responder.lock().unwrap())(&req);
                        let head_only = req.method == "HEAD";
                        if !write_action(stream.get_mut(), action, head_only).await {
                            return;
                        }
                    }
                });
            }
        });
        MockServer {
            url,
            received,
            task,
        }
    }

    fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn count(&self, method: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

async fn read_request(
    stream: &mut BufReader<tokio::net::TcpStream>,
    signer: &Signer,
) -> Option<Received> {
    let mut line = String::new();
    if stream.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        stream.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut req = Received {
        method,
        path,
        query,
        headers,
        body,
        signature_ok: false,
    };
    req.signature_ok = verify_signature(&req, signer);
    Some(req)
}

/// Checks the received request's signature the way a server would, with
/// the server-side verifier and the server's copy of the secret. The
/// algorithm must also be the one the test expects (`AWS ...` is S3 SigV2 or
/// OBS AWS-V2 depending on the endpoint).
fn verify_signature(req: &Received, signer: &Signer) -> bool {
    // Path-style: /bucket/key.
    let rest = req.path.strip_prefix(&format!("/{BUCKET}")).unwrap_or("");
    let key = rest.strip_prefix('/').filter(|k| !k.is_empty());
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let query = req
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (decode(n), Some(decode(v))),
            None => (decode(p), None),
        })
        .collect();
    let parts = RequestParts {
        method: req.method.clone(),
        bucket: Some(BUCKET.to_string()),
        key: key.map(decode),
        path: req.path.clone(),
        query,
        headers: req.headers.clone(),
    };
    let is_obs = signer.version == SignatureVersion::ObsV2;
    sign::verify(&parts, is_obs, |ak| {
        (ak == ACCESS_KEY).then(|| Credentials::new(ACCESS_KEY, SECRET_KEY))
    })
    .is_ok_and(|parsed| parsed.version == signer.version)
}

/// Writes the action; false when the connection must close.
async fn write_action(stream: &mut tokio::net::TcpStream, action: Action, head_only: bool) -> bool {
    let (status, headers, body, declared) = match action {
        Action::Reset => return false,
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let len = body.len();
            (status, headers, body, len)
        }
        // Both tests that cut bodies short do it to ranged GETs: a 206.
        Action::Truncate { declared, body } => (206, Vec::new(), body, declared),
        Action::Unsized {
            status,
            headers,
            body,
        } => {
            let mut out = format!("HTTP/1.1 {status} Scripted\r\nConnection: close\r\n");
            for (n, v) in &headers {
                out.push_str(&format!("{n}: {v}\r\n"));
            }
            out.push_str("\r\n");
            let _ = stream.write_all(out.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            return false;
        }
    };
    let mut out = format!("HTTP/1.1 {status} Scripted\r\n");
    let has_length = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    for (n, v) in &headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    if !has_length {
        out.push_str(&format!("Content-Length: {declared}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&body);
    }
    if stream.write_all(&bytes).await.is_err() {
        return false;
    }
    declared == body.len()
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn store_for(server: &MockServer, dialect: Dialect, retry: RetryPolicy) -> HttpStore {
    let mut config = HttpStoreConfig::new(
        &server.url,
        BUCKET,
        dialect,
        Credentials::new(ACCESS_KEY, SECRET_KEY).with_session_token(TOKEN),
    );
    config.region = "test-region".into();
    config.path_style = true;
    config.retry = retry;
    config.read_timeout = Duration::from_secs(5);
    HttpStore::new(config).expect("store config is valid")
}

async fn s3_server(responder: Responder) -> MockServer {
    MockServer::start(
        Signer::new(SignatureVersion::S3V4, "test-region"),
        responder,
    )
    .await
}

const HEAD_OK: &[(&str, &str)] = &[
    ("Content-Length", "11"),
    ("ETag", "\"abc\""),
    ("Last-Modified", "Tue, 05 Mar 2024 07:24:19 GMT"),
    ("x-amz-meta-mode", "100644"),
];

#[tokio::test]
async fn every_dialect_puts_requests_on_the_wire_as_signed() {
    let keys = [
        "plain.txt",
        "weird/a+b=c&d~e%f g.txt",
        "unicode/日本語/ファイル ü.txt",
        "odd//path/./x..y",
    ];
    for version in SignatureVersion::ALL {
        let provider = match version {
            SignatureVersion::S3V4 | SignatureVersion::S3V2 => Provider::S3,
            SignatureVersion::OssV1 | SignatureVersion::OssV4 => Provider::Oss,
            SignatureVersion::Obs | SignatureVersion::ObsV2 => Provider::Obs,
            SignatureVersion::Cos => Provider::Cos,
        };
        let dialect = Dialect::new(provider).with_signature(version);
        let server = MockServer::start(
            Signer::new(version, "test-region"),
            Box::new(|r: &Received| match r.method.as_str() {
                "HEAD" => respond(200, HEAD_OK, ""),
                "GET" => respond(
                    200,
                    &[],
                    "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>",
                ),
                _ => respond(200, &[("ETag", "\"e\"")], ""),
            }),
        )
        .await;
        let store = store_for(&server, dialect, fast_retry(1));
        for key in keys {
            store.head_object(key).await.expect("head");
            let mut attributes = ObjectAttributes::default();
            attributes.metadata.insert("mode".into(), "100644".into());
            store
                .put_object(&PutRequest {
                    key: key.into(),
                    body: Bytes::from_static(b"hello"),
                    attributes,
                })
                .await
                .expect("put");
        }
        store
            .list_objects(&ListRequest {
                prefix: "weird/a b+c/".into(),
                delimiter: Some("/".into()),
                continuation: Some(ListContinuation::Token("tok+/=".into())),
                ..Default::default()
            })
            .await
            .expect("list");
        let requests = server.requests();
        assert_eq!(requests.len(), keys.len() * 2 + 1);
        for r in &requests {
            assert!(
                r.signature_ok,
                "{version:?}: signature does not verify for {} {}?{}",
                r.method, r.path, r.query
            );
            assert_eq!(
                r.header(version.security_token_header()),
                Some(TOKEN),
                "{version:?}: session token header"
            );
        }
        let put = requests.iter().find(|r| r.method == "PUT").unwrap();
        let meta_header = format!("{}mode", dialect_meta_prefix(version));
        assert_eq!(put.header(&meta_header), Some("100644"), "{version:?}");
        assert_eq!(put.body, b"hello");
        assert!(put.header("content-md5").is_some());
    }
}

fn dialect_meta_prefix(version: SignatureVersion) -> &'static str {
    match version {
        SignatureVersion::S3V4 | SignatureVersion::S3V2 | SignatureVersion::ObsV2 => "x-amz-meta-",
        SignatureVersion::OssV1 | SignatureVersion::OssV4 => "x-oss-meta-",
        SignatureVersion::Obs => "x-obs-meta-",
        SignatureVersion::Cos => "x-cos-meta-",
    }
}

#[tokio::test]
async fn head_object_reads_size_etag_metadata_and_vendor_headers() {
    let server = MockServer::start(
        Signer::new(SignatureVersion::OssV4, "test-region"),
        Box::new(|_| {
            respond(
                200,
                &[
                    ("Content-Length", "1024"),
                    ("ETag", "\"5B3C1A2E053D763E1B002CC607C5A0FE\""),
                    ("Content-Type", "text/plain"),
                    ("Last-Modified", "Fri, 24 Feb 2012 06:07:48 GMT"),
                    ("x-oss-object-type", "Appendable"),
                    ("x-oss-next-append-position", "1024"),
                    ("x-oss-hash-crc64ecma", "3231342946509354535"),
                    ("x-oss-meta-mtime", "1709622489"),
                    ("x-oss-request-id", "5CAC4364B7AEADE017000660"),
                ],
                "",
            )
        }),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Oss), fast_retry(1));
    let meta = store.head_object("logs/app.log").await.unwrap();
    assert_eq!(meta.size, 1024);
    assert_eq!(meta.etag, "5B3C1A2E053D763E1B002CC607C5A0FE");
    assert_eq!(meta.object_type, ObjectType::Appendable);
    assert_eq!(meta.next_append_position, Some(1024));
    assert_eq!(meta.crc64, Some(3231342946509354535));
    assert_eq!(
        meta.metadata.get("mtime").map(String::as_str),
        Some("1709622489")
    );
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert!(meta.last_modified.is_some());
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let mut n = 0;
    let server = s3_server(Box::new(move |_| {
        n += 1;
        match n {
            1 => respond(503, &[], &error_body("SlowDown")),
            2 => Action::Reset,
            3 => respond(500, &[], &error_body("InternalError")),
            _ => respond(200, HEAD_OK, ""),
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(6));
    let meta = store
        .head_object("k")
        .await
        .expect("fourth attempt succeeds");
    assert_eq!(meta.size, 11);
    assert_eq!(server.count("HEAD"), 4);
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_error_is_reported() {
    let server = s3_server(Box::new(|_| respond(503, &[], &error_body("SlowDown")))).await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(3));
    let err = store
        .get_object(&GetRequest {
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(server.count("GET"), 3);
    match err {
        StoreError::Service(d) => {
            assert_eq!((d.status, d.code.as_str()), (503, "SlowDown"));
            assert_eq!(
                d.request_id, "REQ-SlowDown",
                "request ID kept for operators"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn client_errors_are_not_retried_and_map_to_typed_errors() {
    let server = s3_server(Box::new(|r: &Received| match r.path.as_str() {
        p if p.ends_with("/missing") => respond(404, &[], &error_body("NoSuchKey")),
        p if p.ends_with("/denied") => respond(403, &[], &error_body("AccessDenied")),
        p if p.ends_with("/badsig") => respond(403, &[], &error_body("SignatureDoesNotMatch")),
        _ => respond(404, &[], &error_body("NoSuchBucket")),
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(5));
    let get = |key: &str| GetRequest {
        key: key.into(),
        ..Default::default()
    };
    assert!(matches!(
        store.get_object(&get("missing")).await,
        Err(StoreError::NoSuchKey { key }) if key == "missing"
    ));
    assert!(matches!(
        store.get_object(&get("denied")).await,
        Err(StoreError::AccessDenied(_))
    ));
    assert!(matches!(
        store.get_object(&get("badsig")).await,
        Err(StoreError::BadCredentials(_))
    ));
    assert!(matches!(
        store.get_object(&get("other")).await,
        Err(StoreError::NoSuchBucket { .. })
    ));
    assert_eq!(server.count("GET"), 4, "one request each, no retries");
}

#[tokio::test]
async fn head_bucket_distinguishes_missing_bucket_and_reports_pfs() {
    let server = MockServer::start(
        Signer::new(SignatureVersion::Obs, "test-region"),
        Box::new(|_| {
            respond(
                200,
                &[
                    ("x-obs-bucket-location", "cn-north-4"),
                    ("x-obs-fs-file-interface", "Enabled"),
                ],
                "",
            )
        }),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Obs), fast_retry(1));
    let info = store.head_bucket().await.unwrap();
    assert!(info.obs_pfs);
    assert_eq!(info.region.as_deref(), Some("cn-north-4"));

    let server = s3_server(Box::new(|_| respond(404, &[], ""))).await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    assert!(matches!(
        store.head_bucket().await,
        Err(StoreError::NoSuchBucket { bucket }) if bucket == BUCKET
    ));
}

/// The error a one-attempt ranged GET of `range` gets from `server`.
async fn ranged_get_error(server: &MockServer, range: std::ops::Range<u64>) -> StoreError {
    let store = store_for(server, Dialect::new(Provider::S3), fast_retry(1));
    let req = GetRequest {
        key: "k".into(),
        range: Some(range),
        if_match: None,
    };
    store
        .get_object(&req)
        .await
        .expect_err("the response is refused")
}

#[tokio::test]
async fn ranged_get_checks_content_range_and_length() {
    let mut n = 0;
    let server = s3_server(Box::new(move |r: &Received| {
        n += 1;
        assert_eq!(r.header("range"), Some("bytes=100-104"));
        match n {
            // A body cut short is retried...
            1 => Action::Truncate {
                declared: 5,
                body: b"ab".to_vec(),
            },
            // ...and a correct 206 accepted.
            _ => respond(
                206,
                &[("Content-Range", "bytes 100-104/1000"), ("ETag", "\"e1\"")],
                "hello",
            ),
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(3));
    let got = store
        .get_object(&GetRequest {
            key: "k".into(),
            range: Some(100..105),
            if_match: Some("e1".into()),
        })
        .await
        .unwrap();
    assert_eq!(&got.body[..], b"hello");
    assert_eq!(got.range, 100..105);
    assert_eq!(got.total_size, 1000);
    assert_eq!(got.etag, "e1");
    assert_eq!(server.requests()[1].header("if-match"), Some("\"e1\""));

    // A 200 with the whole object is refused without reading it: a range
    // past the end (OSS answers so) is InvalidRange, anything else means
    // the server ignored the Range header.
    let server = s3_server(Box::new(|_| respond(200, &[], "hello"))).await;
    let err = ranged_get_error(&server, 100..105).await;
    assert!(matches!(err, StoreError::InvalidRange(_)), "{err:?}");
    let server = s3_server(Box::new(|_| respond(200, &[], &"x".repeat(1000)))).await;
    let err = ranged_get_error(&server, 100..105).await;
    assert!(matches!(err, StoreError::InvalidResponse(_)), "{err:?}");

    // A server that answers another range than asked is refused.
    let server = s3_server(Box::new(|_| {
        respond(206, &[("Content-Range", "bytes 0-4/1000")], "hello")
    }))
    .await;
    let err = ranged_get_error(&server, 100..105).await;
    assert!(matches!(err, StoreError::InvalidResponse(_)), "{err:?}");

    // Content-Range and body length disagree.
    let server = s3_server(Box::new(|_| {
        respond(206, &[("Content-Range", "bytes 100-199/1000")], "hello")
    }))
    .await;
    let err = ranged_get_error(&server, 100..200).await;
    assert!(matches!(err, StoreError::IncompleteBody(_)), "{err:?}");

    // 412 and 416 are typed.
    let server = s3_server(Box::new(|r: &Received| {
        if r.header("if-match").is_some() {
            respond(412, &[], &error_body("PreconditionFailed"))
        } else {
            respond(416, &[], &error_body("InvalidRange"))
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(3));
    let mut req = GetRequest {
        key: "k".into(),
        range: Some(5000..5001),
        if_match: Some("old".into()),
    };
    assert!(matches!(
        store.get_object(&req).await,
        Err(StoreError::PreconditionFailed(_))
    ));
    req.if_match = None;
    assert!(matches!(
        store.get_object(&req).await,
        Err(StoreError::InvalidRange(_))
    ));
}

#[tokio::test]
async fn bodies_longer_than_asked_are_refused_and_not_held() {
    let headers = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    let too_long = |err: StoreError, limit: &str| match &err {
        StoreError::InvalidResponse(m) if m.contains(&format!("at most {limit}")) => {}
        other => panic!("expected a body refused past {limit} bytes, got {other:?}"),
    };
    // A 206 that announces more than the five bytes asked for: refused
    // before its body is read.
    let server = s3_server(Box::new(|_| {
        respond(
            206,
            &[
                ("Content-Range", "bytes 100-104/1000"),
                ("Content-Length", "50000000"),
            ],
            "hello",
        )
    }))
    .await;
    too_long(ranged_get_error(&server, 100..105).await, "5");
    // The same without a Content-Length: cut off past the range, whole or
    // in blocks.
    let range_only = headers(&[("Content-Range", "bytes 100-104/1000")]);
    let server = s3_server(Box::new(move |_| Action::Unsized {
        status: 206,
        headers: range_only.clone(),
        body: b"hello, and then some".to_vec(),
    }))
    .await;
    too_long(ranged_get_error(&server, 100..105).await, "5");
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let req = GetRequest {
        key: "k".into(),
        range: Some(100..105),
        if_match: None,
    };
    too_long(store.get_object_blocks(&req, 2).await.unwrap_err(), "5");
    // A listing the size of a server's choosing: cut off at 16 MiB.
    let limit = bucketfs::store::http::MAX_UNSIZED_BODY;
    let server = s3_server(Box::new(move |_| Action::Unsized {
        status: 200,
        headers: Vec::new(),
        body: vec![b' '; limit as usize + 1],
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let err = store
        .list_objects(&ListRequest::default())
        .await
        .unwrap_err();
    too_long(err, &limit.to_string());
    // An error answer is XML too, whatever range was asked.
    let server = s3_server(Box::new(move |_| {
        respond(500, &[("Content-Length", "999999999")], "")
    }))
    .await;
    too_long(
        ranged_get_error(&server, 0..1 << 40).await,
        &limit.to_string(),
    );
}

#[tokio::test]
async fn block_gets_cut_the_body_into_exact_blocks_and_retry_short_bodies() {
    let mut n = 0;
    let server = s3_server(Box::new(move |_: &Received| {
        n += 1;
        match n {
            1 => Action::Truncate {
                declared: 10,
                body: b"0123".to_vec(),
            },
            _ => respond(
                206,
                &[("Content-Range", "bytes 0-9/10"), ("ETag", "\"e\"")],
                "0123456789",
            ),
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(3));
    let req = GetRequest {
        key: "k".into(),
        range: Some(0..10),
        if_match: None,
    };
    let got = store.get_object_blocks(&req, 4).await.unwrap();
    let blocks: Vec<&[u8]> = got.blocks.iter().map(|b| &b[..]).collect();
    assert_eq!(blocks, [&b"0123"[..], b"4567", b"89"]);
    assert_eq!(
        (got.range, got.total_size, got.etag.as_str()),
        (0..10, 10, "e")
    );
    assert_eq!(server.requests().len(), 2, "the short body was retried");

    // The blocks must add up to what Content-Range announced.
    let server = s3_server(Box::new(|_| {
        respond(206, &[("Content-Range", "bytes 0-99/1000")], "hello")
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let req = GetRequest {
        key: "k".into(),
        range: Some(0..100),
        if_match: None,
    };
    let err = store.get_object_blocks(&req, 4).await.unwrap_err();
    assert!(matches!(err, StoreError::IncompleteBody(_)), "{err:?}");
}

fn oss_append_server(script: Vec<Action>, head_size: u64) -> impl FnMut(&Received) -> Action {
    let mut script: VecDeque<Action> = script.into();
    move |r: &Received| {
        if r.method == "HEAD" {
            let size = head_size.to_string();
            return Action::Respond {
                status: 200,
                headers: vec![
                    ("Content-Length".into(), size),
                    ("x-oss-object-type".into(), "Appendable".into()),
                ],
                body: Vec::new(),
            };
        }
        script
            .pop_front()
            .unwrap_or_else(|| respond(500, &[], "script exhausted"))
    }
}

fn append_at(position: u64, body: &'static [u8]) -> AppendRequest {
    AppendRequest {
        key: "log".into(),
        position,
        body: Bytes::from_static(body),
        attributes: ObjectAttributes::default(),
    }
}

#[tokio::test]
async fn append_after_a_lost_response_checks_the_length_instead_of_resending() {
    // The append landed (length is now 100 + 5) but its response was lost.
    let server = MockServer::start(
        Signer::new(SignatureVersion::OssV4, "test-region"),
        Box::new(oss_append_server(vec![Action::Reset], 105)),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Oss), fast_retry(5));
    let resp = store
        .append_object(&append_at(100, b"12345"))
        .await
        .unwrap();
    assert_eq!(resp.next_position, 105);
    assert_eq!(server.count("POST"), 1, "the append was not sent twice");
    assert_eq!(server.count("HEAD"), 1);
    let post = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert!(post.has_param("append") && post.query.contains("position=100"));
}

#[tokio::test]
async fn append_that_did_not_land_is_sent_again() {
    let server = MockServer::start(
        Signer::new(SignatureVersion::OssV4, "test-region"),
        Box::new(oss_append_server(
            vec![
                respond(503, &[], &error_body("ServiceUnavailable")),
                respond(200, &[("x-oss-next-append-position", "105")], ""),
            ],
            100,
        )),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Oss), fast_retry(5));
    let resp = store
        .append_object(&append_at(100, b"12345"))
        .await
        .unwrap();
    assert_eq!(resp.next_position, 105);
    assert_eq!(server.count("POST"), 2);
}

#[tokio::test]
async fn append_errors_are_typed() {
    let server = MockServer::start(
        Signer::new(SignatureVersion::OssV4, "test-region"),
        Box::new(|r: &Received| {
            if r.query.contains("position=0") {
                respond(409, &[], &error_body("ObjectNotAppendable"))
            } else {
                respond(
                    409,
                    &[("x-oss-next-append-position", "4096")],
                    &error_body("PositionNotEqualToLength"),
                )
            }
        }),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Oss), fast_retry(5));
    let mut req = append_at(10, b"x");
    assert_eq!(
        store.append_object(&req).await.unwrap_err(),
        StoreError::PositionNotEqualToLength {
            position: 10,
            next_position: Some(4096)
        }
    );
    req.position = 0;
    assert!(matches!(
        store.append_object(&req).await,
        Err(StoreError::ObjectNotAppendable { .. })
    ));
    assert_eq!(server.count("POST"), 2, "no retries of definite answers");

    // A dialect without append refuses without sending anything.
    let s3 = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    assert!(matches!(
        s3.append_object(&req).await,
        Err(StoreError::Unsupported(_))
    ));
    assert_eq!(server.count("POST"), 2);
}

#[tokio::test]
async fn complete_multipart_with_a_200_error_is_checked_then_completed() {
    let complete_ok =
        "<CompleteMultipartUploadResult><ETag>\"abc-2\"</ETag></CompleteMultipartUploadResult>";
    let list_parts = "<ListPartsResult><IsTruncated>false</IsTruncated><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag><Size>5</Size></Part></ListPartsResult>";
    let mut completes = 0;
    let server = s3_server(Box::new(move |r: &Received| match r.method.as_str() {
        "POST" => {
            completes += 1;
            if completes == 1 {
                respond(200, &[], &error_body("InternalError"))
            } else {
                respond(200, &[], complete_ok)
            }
        }
        _ => respond(200, &[], list_parts),
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(4));
    let parts = vec![
        CompletedPart {
            part_number: 1,
            etag: "a".into(),
        },
        CompletedPart {
            part_number: 2,
            etag: "b".into(),
        },
    ];
    let resp = store
        .complete_multipart_upload(&CompleteMultipartRequest {
            key: "big".into(),
            upload_id: "U1".into(),
            parts,
        })
        .await
        .unwrap();
    assert_eq!(resp.etag, "abc-2");
    let requests = server.requests();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(
        methods,
        ["POST", "GET", "POST"],
        "complete, list parts, complete"
    );
    let body = String::from_utf8(requests[0].body.clone()).unwrap();
    assert!(
        body.contains("<PartNumber>2</PartNumber><ETag>\"b\"</ETag>"),
        "{body}"
    );
}

#[tokio::test]
async fn complete_multipart_that_landed_is_recognised_by_its_etag() {
    let parts = vec![
        CompletedPart {
            part_number: 1,
            etag: "0cc175b9c0f1b6a831c399e269772661".into(),
        },
        CompletedPart {
            part_number: 2,
            etag: "92eb5ffee6ae2fec3ad71c777531578f".into(),
        },
    ];
    let expected = bucketfs::store::multipart_etag(&parts).unwrap();
    let head_etag = format!("\"{expected}\"");
    let server = s3_server(Box::new(move |r: &Received| match r.method.as_str() {
        "POST" => Action::Reset,
        "GET" => respond(404, &[], &error_body("NoSuchUpload")),
        _ => respond(
            200,
            &[("Content-Length", "2"), ("ETag", head_etag.as_str())],
            "",
        ),
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(4));
    let resp = store
        .complete_multipart_upload(&CompleteMultipartRequest {
            key: "big".into(),
            upload_id: "U1".into(),
            parts,
        })
        .await
        .unwrap();
    assert_eq!(resp.etag, expected);
    assert_eq!(server.count("POST"), 1, "not completed twice");
}

#[tokio::test]
async fn copy_object_sends_directive_and_rejects_a_200_error() {
    let mut n = 0;
    let server = MockServer::start(
        Signer::new(SignatureVersion::Cos, "test-region"),
        Box::new(move |_: &Received| {
            n += 1;
            if n == 1 {
                respond(200, &[], &error_body("InternalError"))
            } else {
                respond(
                    200,
                    &[],
                    "<CopyObjectResult><ETag>\"new\"</ETag></CopyObjectResult>",
                )
            }
        }),
    )
    .await;
    let store = store_for(&server, Dialect::new(Provider::Cos), fast_retry(3));
    let mut attrs = ObjectAttributes::default();
    attrs.metadata.insert("mode".into(), "100600".into());
    let resp = store
        .copy_object(&CopyRequest {
            source_key: "a b.txt".into(),
            dest_key: "a b.txt".into(),
            directive: MetadataDirective::Replace(attrs),
            source_if_match: None,
        })
        .await
        .unwrap();
    assert_eq!(resp.etag, "new");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the 200-with-error was retried");
    let r = &requests[1];
    assert!(r.signature_ok);
    assert_eq!(r.header("x-cos-metadata-directive"), Some("Replaced"));
    assert_eq!(r.header("x-cos-meta-mode"), Some("100600"));
    let source = r.header("x-cos-copy-source").unwrap();
    assert!(
        source.starts_with(&format!("{BUCKET}.127.0.0.1:")) && source.ends_with("/a%20b.txt"),
        "{source}"
    );
}

#[tokio::test]
async fn listing_falls_back_to_v1_when_v2_is_refused() {
    let server = s3_server(Box::new(|r: &Received| {
        if r.query.contains("list-type=2") {
            respond(400, &[], &error_body("InvalidArgument"))
        } else {
            respond(
                200,
                &[],
                "<ListBucketResult><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated><NextMarker>b%2Fc</NextMarker><Contents><Key>a</Key><Size>1</Size><ETag>\"x\"</ETag></Contents><CommonPrefixes><Prefix>b%2F</Prefix></CommonPrefixes></ListBucketResult>",
            )
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let page = store.list_objects(&ListRequest::default()).await.unwrap();
    assert_eq!(page.next, Some(ListContinuation::Marker("b/c".into())));
    assert_eq!(page.common_prefixes, vec!["b/".to_string()]);
    // The next page goes straight to V1 with the marker. This server gives
    // the same page again, resuming where it began: an error, not a loop.
    let again = store
        .list_objects(&ListRequest {
            continuation: page.next.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&again, StoreError::InvalidResponse(m) if m.contains("never end")),
        "{again}"
    );
    let queries: Vec<String> = server.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(queries.len(), 3);
    assert!(queries[0].contains("list-type=2"));
    assert!(!queries[1].contains("list-type"));
    assert!(!queries[2].contains("list-type") && queries[2].contains("marker=b%2Fc"));
}

#[tokio::test]
async fn a_v2_listing_that_repeats_its_token_is_an_error_not_a_loop() {
    let server = s3_server(Box::new(|_: &Received| {
        respond(
            200,
            &[],
            "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>same</NextContinuationToken><Contents><Key>a</Key><Size>1</Size></Contents></ListBucketResult>",
        )
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let first = store.list_objects(&ListRequest::default()).await.unwrap();
    assert_eq!(first.next, Some(ListContinuation::Token("same".into())));
    let err = store
        .list_objects(&ListRequest {
            continuation: first.next,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidResponse(m) if m.contains("never end")),
        "{err}"
    );
}

#[tokio::test]
async fn delete_objects_batches_and_sends_content_md5() {
    let server = s3_server(Box::new(|r: &Received| {
        let body = String::from_utf8_lossy(&r.body).to_string();
        let deleted: String = body
            .split("<Key>")
            .skip(1)
            .map(|k| {
                format!(
                    "<Deleted><Key>{}</Key></Deleted>",
                    k.split("</Key>").next().unwrap()
                )
            })
            .collect();
        respond(200, &[], &format!("<DeleteResult>{deleted}</DeleteResult>"))
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let keys: Vec<String> = (0..2500).map(|i| format!("dir/f{i:04}")).collect();
    let result = store.delete_objects(&keys).await.unwrap();
    assert_eq!(result.deleted.len(), 2500);
    assert!(result.errors.is_empty());
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "batches of 1000");
    for r in &requests {
        use base64::Engine;
        use md5::Digest;
        let want = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&r.body));
        assert_eq!(r.header("content-md5"), Some(want.as_str()));
        assert!(r.has_param("delete"));
    }
}

#[tokio::test]
async fn native_operations_use_their_dialect_spelling() {
    let server = MockServer::start(
        Signer::new(SignatureVersion::Obs, "test-region"),
        Box::new(|_| respond(200, &[], "")),
    )
    .await;
    let pfs = Dialect::new(Provider::Obs).with_bucket_info(&BucketInfo {
        obs_pfs: true,
        ..Default::default()
    });
    let store = store_for(&server, pfs, fast_retry(1));
    store
        .rename_object("a/old name", "a/new name")
        .await
        .unwrap();
    store.truncate_object("a/f", 42).await.unwrap();
    store
        .modify_object("a/f", 7, Bytes::from_static(b"xyz"))
        .await
        .unwrap();
    let r = server.requests();
    assert!(r.iter().all(|r| r.signature_ok));
    assert_eq!(
        (r[0].method.as_str(), r[0].path.as_str()),
        ("POST", "/bkt/a/old%20name")
    );
    assert!(r[0].has_param("rename") && r[0].query.contains("name=a%2Fnew%20name"));
    assert_eq!(r[1].method, "PUT");
    assert!(r[1].has_param("truncate") && r[1].query.contains("length=42"));
    assert!(r[2].has_param("modify") && r[2].query.contains("position=7"));
    assert_eq!(r[2].body, b"xyz");

    // OSS hierarchical namespace: POST to the destination, source in a header.
    let server = MockServer::start(
        Signer::new(SignatureVersion::OssV1, "test-region"),
        Box::new(|r: &Received| {
            if r.query.contains("symlink") && r.method == "GET" {
                respond(200, &[("x-oss-symlink-target", "dir%2Ft%20x")], "")
            } else {
                respond(200, &[], "")
            }
        }),
    )
    .await;
    let hns = Dialect::new(Provider::Oss)
        .with_signature(SignatureVersion::OssV1)
        .with_bucket_info(&BucketInfo {
            oss_hierarchical_namespace: true,
            ..Default::default()
        });
    let store = store_for(&server, hns, fast_retry(1));
    store.rename_object("src dir/", "dst dir/").await.unwrap();
    store
        .put_symlink("link", "dir/t x", &ObjectAttributes::default())
        .await
        .unwrap();
    assert_eq!(store.get_symlink("link").await.unwrap(), "dir/t x");
    let r = server.requests();
    assert!(r.iter().all(|r| r.signature_ok));
    assert_eq!(r[0].path, "/bkt/dst%20dir/");
    assert!(r[0].has_param("x-oss-rename"));
    assert_eq!(r[0].header("x-oss-rename-source"), Some("src%20dir/"));
    assert_eq!(r[1].header("x-oss-symlink-target"), Some("dir%2Ft%20x"));

    // Without the capability nothing is sent.
    let plain = store_for(&server, Dialect::new(Provider::Oss), fast_retry(1));
    let before = server.requests().len();
    assert!(matches!(
        plain.rename_object("a", "b").await,
        Err(StoreError::Unsupported(_))
    ));
    assert_eq!(server.requests().len(), before);
}

#[tokio::test]
async fn upload_part_copy_sends_the_source_range() {
    let server = s3_server(Box::new(|_| {
        respond(
            200,
            &[],
            "<CopyPartResult><ETag>\"p3\"</ETag></CopyPartResult>",
        )
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(1));
    let part = store
        .upload_part_copy(&UploadPartCopyRequest {
            key: "big".into(),
            upload_id: "U".into(),
            part_number: 3,
            source_key: "src file".into(),
            source_range: Some(8..16),
            source_if_match: Some("etag1".into()),
        })
        .await
        .unwrap();
    assert_eq!(part.etag, "p3");
    let r = &server.requests()[0];
    assert_eq!(r.header("x-amz-copy-source"), Some("/bkt/src%20file"));
    assert_eq!(r.header("x-amz-copy-source-range"), Some("bytes=8-15"));
    assert_eq!(r.header("x-amz-copy-source-if-match"), Some("\"etag1\""));
    assert!(r.query.contains("partNumber=3") && r.query.contains("uploadId=U"));
}

/// A writer that collects log output for inspection.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Trace-level logs of every test in this binary, collected in one buffer.
///
/// The subscriber is global, not per test: tracing caches per call site
/// whether anyone listens, and a thread-local subscriber can miss events
/// whose call site was first reached by a test on another thread.
fn captured_logs() -> LogBuffer {
    static LOGS: std::sync::OnceLock<LogBuffer> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogBuffer::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        logs
    })
    .clone()
}

#[tokio::test]
async fn secrets_never_reach_debug_output_errors_or_logs() {
    let logs = captured_logs();

    let mut n = 0;
    let server = s3_server(Box::new(move |_| {
        n += 1;
        if n == 1 {
            respond(503, &[], &error_body("SlowDown"))
        } else {
            respond(403, &[], &error_body("SignatureDoesNotMatch"))
        }
    }))
    .await;
    let store = store_for(&server, Dialect::new(Provider::S3), fast_retry(3));
    let err = store.head_object("k").await.unwrap_err();
    let signature = server.requests()[0]
        .header("authorization")
        .and_then(|a| a.split("Signature=").nth(1))
        .unwrap()
        .to_string();
    let shown = format!(
        "{err} {err:?} {store:?} {:?}",
        String::from_utf8_lossy(&logs.0.lock().unwrap())
    );
    assert!(shown.contains("retrying"), "debug logging was on: {shown}");
    for secret in [SECRET_KEY, TOKEN, signature.as_str()] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}
