//! What the emulator reads off a request and writes into a response: the
//! bucket and key (path-style or virtual-hosted), the decoded query, the
//! operation, and the XML bodies of each dialect.
//!
//! Subtle cases:
//! 1. Path-style when the Host is an IP address or `localhost` (how oss2,
//!    boto3 and our client address a local endpoint); otherwise the bucket is
//!    the Host's first label (COS always sends `BUCKET-APPID.cos.REGION...`).
//! 2. The key is split off the raw path before decoding, so `%2F` inside a
//!    key (oss2 sends `/` that way) stays inside the key.
//! 3. Query values are form-decoded: python-requests writes a space as `+`,
//!    and every SDK percent-encodes a literal plus.
//! 4. Listing keys go out percent-encoded with `/` kept and a space as `%20`:
//!    oss2 decodes with `unquote` (a `+` would stay a plus), boto3 with
//!    `unquote_plus` (which also takes `%20`).
//! 5. oss2 needs list XML without a default namespace; S3 gets the AWS one.

use crate::store::dialect::Provider;
use crate::store::encode;
use crate::store::xml::escape;
use std::fmt::Write;
use std::time::SystemTime;

/// Bucket and key a request addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub bucket: Option<String>,
    pub key: Option<String>,
}

/// Works out bucket and key from the Host header and the raw path.
pub fn target(host: &str, raw_path: &str) -> Target {
    let hostname = host_without_port(host);
    let path = raw_path.strip_prefix('/').unwrap_or(raw_path);
    let path_style = hostname.parse::<std::net::IpAddr>().is_ok()
        || hostname.eq_ignore_ascii_case("localhost")
        || !hostname.contains('.');
    let (bucket, raw_key) = if path_style {
        match path.split_once('/') {
            Some((b, k)) => (Some(b.to_string()), k),
            None => (Some(path.to_string()), ""),
        }
    } else {
        let first = hostname.split('.').next().unwrap_or_default();
        (Some(first.to_string()), path)
    };
    Target {
        bucket: bucket.filter(|b| !b.is_empty()).map(|b| encode::decode(&b)),
        key: Some(encode::decode(raw_key)).filter(|k| !k.is_empty()),
    }
}

/// The Host header without its `:port`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split(']')
            .next()
            .unwrap_or(host)
            .trim_start_matches('[');
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h)
        .unwrap_or(host)
}

/// Decodes a raw query string into `(name, value)` pairs in order.
pub fn query_pairs(raw: &str) -> Vec<(String, Option<String>)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (encode::decode_form(n), Some(encode::decode_form(v))),
            None => (encode::decode_form(p), None),
        })
        .collect()
}

/// The vendor header prefix the emulator answers with.
pub fn response_prefix(provider: Provider) -> &'static str {
    match provider {
        Provider::S3 => "x-amz-",
        Provider::Oss => "x-oss-",
        Provider::Obs => "x-obs-",
        Provider::Cos => "x-cos-",
    }
}

/// Keys and prefixes in `encoding-type=url` listings (subtle case 4).
pub fn encode_listing_key(key: &str) -> String {
    encode::path(key)
}

/// Standard response headers as the services spell them. hyper writes header
/// names lower-case; cos-python-sdk-v5 hands response headers back as a plain,
/// case-sensitive dict, and both its callers and the SDK itself index it with
/// the services' spelling (`upload_file` reads `rt['ETag']`, `download_file`
/// reads `['Content-Length']`). Vendor `x-*` headers stay lower-case, as the
/// services send them.
const RESPONSE_HEADER_CASE: &[&str] = &[
    "Accept-Ranges",
    "Connection",
    "Content-Length",
    "Content-Range",
    "Content-Type",
    "Date",
    "ETag",
    "Last-Modified",
    "Retry-After",
    "Server",
];

static HEADER_CASE: std::sync::OnceLock<Option<hyper::http::Extensions>> =
    std::sync::OnceLock::new();

/// Response extensions that make hyper write the headers of
/// [`RESPONSE_HEADER_CASE`] in that case (see [`learn_header_case`]); `None`
/// until learned or when learning failed (headers then go out lower-case).
pub fn header_case() -> Option<&'static hyper::http::Extensions> {
    HEADER_CASE.get().and_then(Option::as_ref)
}

/// hyper writes a response's header names in their original case when the
/// response carries the private extension that `preserve_header_case`
/// records on a parsed request (hyper's documented proxy mechanism). The
/// extension cannot be built directly, so this parses, once, a request that
/// names every header of [`RESPONSE_HEADER_CASE`] through hyper's own HTTP/1
/// server over an in-memory pipe and keeps that request's extensions.
pub async fn learn_header_case() {
    if HEADER_CASE.get().is_some() {
        return;
    }
    let learned = tokio::time::timeout(std::time::Duration::from_secs(5), parse_header_case())
        .await
        .ok()
        .flatten();
    if learned.is_none() {
        tracing::debug!("response header case not learned: headers go out lower-case");
    }
    let _ = HEADER_CASE.set(learned);
}

async fn parse_header_case() -> Option<hyper::http::Extensions> {
    use tokio::io::AsyncWriteExt;
    let (mut client, server) = tokio::io::duplex(4096);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        if let Some(tx) = tx.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(req.extensions().clone());
        }
        async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
        }
    });
    let connection = tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service),
    );
    let mut request = String::from("GET / HTTP/1.1\r\nHost: localhost\r\n");
    for name in RESPONSE_HEADER_CASE {
        let value = match *name {
            "Content-Length" => "0",
            "Connection" => "close",
            _ => "x",
        };
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("\r\n");
    let written = client.write_all(request.as_bytes()).await;
    let extensions = match written {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    drop(client);
    connection.abort();
    extensions
}

/// `2024-03-05T07:24:19.000Z`, always with `.000` milliseconds: oss2 parses
/// listing and copy dates with a pattern ending in a literal `\.000Z` and
/// rejects any other fraction (the services only keep whole seconds).
pub fn iso8601(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

fn xml_open(provider: Provider, root: &str) -> String {
    let ns = match provider {
        Provider::S3 => " xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"",
        _ => "",
    };
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root}{ns}>")
}

/// An element with escaped text.
pub fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

/// A whole XML document: `<root>` + `inner` + `</root>`.
pub fn document(provider: Provider, root: &str, inner: &str) -> String {
    format!("{}{inner}</{root}>", xml_open(provider, root))
}

/// An `<Error>` body with the fields every SDK looks for (COS needs
/// `Resource`, all need `Code`, `Message`, `RequestId`).
pub fn error_body(code: &str, message: &str, resource: &str, request_id: &str) -> String {
    let mut inner = String::new();
    element(&mut inner, "Code", code);
    element(&mut inner, "Message", message);
    element(&mut inner, "Resource", resource);
    element(&mut inner, "RequestId", request_id);
    element(&mut inner, "HostId", "bucketfs-emulator");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>{inner}</Error>")
}

/// `<Part>` entries of a CompleteMultipartUpload body.
pub fn parse_complete_parts(body: &str) -> Option<Vec<(u32, String)>> {
    let mut parts = Vec::new();
    for chunk in body.split("<Part>").skip(1) {
        let number = between(chunk, "<PartNumber>", "</PartNumber>")?
            .trim()
            .parse()
            .ok()?;
        let etag = between(chunk, "<ETag>", "</ETag>")?;
        let etag = unescape(etag).trim().trim_matches('"').to_string();
        parts.push((number, etag));
    }
    Some(parts)
}

/// Keys of a DeleteObjects body, and whether it asked for quiet mode.
pub fn parse_delete_keys(body: &str) -> Option<(Vec<String>, bool)> {
    let quiet =
        between(body, "<Quiet>", "</Quiet>").is_some_and(|q| q.trim().eq_ignore_ascii_case("true"));
    let keys = body
        .split("<Object>")
        .skip(1)
        .map(|o| between(o, "<Key>", "</Key>").map(unescape))
        .collect::<Option<Vec<_>>>()?;
    Some((keys, quiet))
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let end = s[start..].find(close)? + start;
    Some(&s[start..end])
}

fn unescape(s: &str) -> String {
    quick_xml::escape::unescape(s)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| s.to_string())
}

/// What a `Range` header asks of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable single range: serve the whole object (200).
    Whole,
    /// These bytes, end exclusive (206).
    Part(std::ops::Range<u64>),
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

/// Parses a single-range `Range` header against an object of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole; // several ranges: the whole object, as S3 does
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => (size.saturating_sub(n), size),
            None => return RangeRequest::Whole,
        },
        (a, "") => match number(a) {
            Some(a) => (a, size),
            None => return RangeRequest::Whole,
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if b >= a => (a, b.saturating_add(1).min(size)),
            _ => return RangeRequest::Whole,
        },
    };
    if start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_and_virtual_hosted_targets() {
        assert_eq!(
            target("127.0.0.1:9000", "/bkt/a%2Fb/c%20d"),
            Target {
                bucket: Some("bkt".into()),
                key: Some("a/b/c d".into())
            }
        );
        assert_eq!(
            target("localhost:9000", "/bkt/"),
            Target {
                bucket: Some("bkt".into()),
                key: None
            }
        );
        assert_eq!(
            target("demo-125.cos.ap-guangzhou.myqcloud.com", "/x/y.txt"),
            Target {
                bucket: Some("demo-125".into()),
                key: Some("x/y.txt".into())
            }
        );
        assert_eq!(
            target("bkt.127.0.0.1:9000", "/"),
            Target {
                bucket: Some("bkt".into()),
                key: None
            }
        );
        assert_eq!(target("127.0.0.1", "/").bucket, None);
    }

    #[test]
    fn query_values_are_form_decoded() {
        assert_eq!(
            query_pairs("append=&position=10&prefix=a+b%2Bc&uploads"),
            vec![
                ("append".to_string(), Some(String::new())),
                ("position".to_string(), Some("10".to_string())),
                ("prefix".to_string(), Some("a b+c".to_string())),
                ("uploads".to_string(), None),
            ]
        );
    }

    #[test]
    fn ranges_follow_http_semantics() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0..10));
        assert_eq!(parse_range("bytes=90-200", 100), Part(90..100));
        assert_eq!(parse_range("bytes=95-", 100), Part(95..100));
        assert_eq!(parse_range("bytes=-10", 100), Part(90..100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
    }

    #[test]
    fn dates_carry_whole_seconds() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_709_623_459_944);
        assert_eq!(iso8601(t), "2024-03-05T07:24:19.000Z");
    }

    #[tokio::test]
    async fn responses_spell_standard_headers_as_the_services_do() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        learn_header_case().await;
        let case = header_case().expect("header case learned").clone();
        let (mut client, server) = tokio::io::duplex(4096);
        let service = hyper::service::service_fn(move |_req| {
            let case = case.clone();
            async move {
                let mut r = hyper::Response::builder()
                    .header("etag", "\"x\"")
                    .header("content-type", "text/plain")
                    .header("x-cos-request-id", "1")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                    .unwrap();
                *r.extensions_mut() = case;
                Ok::<_, std::convert::Infallible>(r)
            }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(server), service),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        client.read_to_string(&mut raw).await.unwrap();
        for line in [
            "\r\nETag: \"x\"\r\n",
            "\r\nContent-Type: text/plain\r\n",
            "\r\nContent-Length: 2\r\n",
            "\r\nx-cos-request-id: 1\r\n",
        ] {
            assert!(raw.contains(line), "{line:?} not in {raw:?}");
        }
    }

    #[test]
    fn request_bodies_are_read() {
        let parts = parse_complete_parts(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part><Part><ETag>\"b\"</ETag><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>",
        )
        .unwrap();
        assert_eq!(parts, vec![(1, "a".to_string()), (2, "b".to_string())]);
        let (keys, quiet) = parse_delete_keys(
            "<Delete><Quiet>true</Quiet><Object><Key>a&amp;b</Key></Object><Object><Key>c</Key></Object></Delete>",
        )
        .unwrap();
        assert_eq!(keys, vec!["a&b".to_string(), "c".to_string()]);
        assert!(quiet);
    }
}
