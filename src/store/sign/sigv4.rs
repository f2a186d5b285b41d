//! The two HMAC-SHA256 algorithms: AWS SigV4 (S3) and Alibaba OSS V4.
//!
//! They share the shape canonical request -> string to sign -> derived key,
//! but differ in every detail that matters:
//! 1. SigV4 signs the path as sent, re-encoded the standard way (only a
//!    key with `.` segments, sent with `%2F` slashes, differs); OSS V4 signs
//!    `/bucket/` + its own encoding of the key, even for virtual-hosted
//!    requests.
//! 2. SigV4 writes a flagless parameter as `name=`; OSS V4 as bare `name`.
//! 3. SigV4 signs every header given except a few transport headers, trimmed
//!    with inner whitespace collapsed, and lists them in `SignedHeaders`;
//!    OSS V4 signs only `x-oss-*`, `content-type`, `content-md5`, untrimmed,
//!    and has no SignedHeaders part (its AdditionalHeaders stay empty).

use super::{RequestParts, hmac_sha256, sha256_hex};
use crate::store::credentials::Credentials;
use crate::store::encode;

/// Headers botocore never signs: they are added or changed by the transport
/// after signing.
const SIGV4_UNSIGNED: &[&str] = &[
    "authorization",
    "content-length",
    "expect",
    "user-agent",
    "x-amzn-trace-id",
    "connection",
];

/// Canonical query of both algorithms: names and values strictly encoded,
/// sorted by name then value.
fn canonical_query(req: &RequestParts, bare_flags: bool) -> String {
    let mut pairs: Vec<(String, Option<String>)> = req
        .query
        .iter()
        .map(|(n, v)| {
            let v = v.as_deref().filter(|v| !(bare_flags && v.is_empty()));
            (encode::strict(n), v.map(encode::strict))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None if bare_flags => n,
            None => format!("{n}="),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Collapses inner whitespace runs and trims, as SigV4 requires.
fn collapse_whitespace(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `yyyymmdd` part of an ISO-8601 basic timestamp header.
fn scope_date(stamp: &str) -> &str {
    stamp.get(..8).unwrap_or(stamp)
}

pub(super) fn s3_authorization(req: &RequestParts, creds: &Credentials, region: &str) -> String {
    s3_authorization_of(req, creds, region, false)
}

/// The SigV4 `Authorization` of `req` signing every header it holds,
/// those a signer leaves out by default (`content-length`, ...) included:
/// for checking a client that lists what it signed, since some do sign
/// them (rclone's Go SDK signs `content-length`).
pub(super) fn s3_authorization_exact(
    req: &RequestParts,
    creds: &Credentials,
    region: &str,
) -> String {
    s3_authorization_of(req, creds, region, true)
}

fn s3_authorization_of(
    req: &RequestParts,
    creds: &Credentials,
    region: &str,
    every_header: bool,
) -> String {
    let amz_date = req.header("x-amz-date").unwrap_or_default();
    let payload = req
        .header("x-amz-content-sha256")
        .unwrap_or(super::EMPTY_SHA256);
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), collapse_whitespace(v)))
        .filter(|(n, _)| every_header || !SIGV4_UNSIGNED.contains(&n.as_str()))
        .collect();
    headers.sort();
    // Repeated headers are joined with commas under one name.
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, v) in headers {
        match merged.last_mut() {
            Some((last, joined)) if *last == n => {
                joined.push(',');
                joined.push_str(&v);
            }
            _ => merged.push((n, v)),
        }
    }
    let canonical_headers: String = merged.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_headers = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        canonical_path(&req.path),
        canonical_query(req, false),
        canonical_headers,
        signed_headers,
        payload
    );
    let scope = format!("{}/{region}/s3/aws4_request", scope_date(amz_date));
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", creds.secret_access_key.expose()).as_bytes(),
        scope_date(amz_date).as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

/// The canonical URI of SigV4 for S3: each segment of the decoded path
/// encoded once, `/` literal (case 1). For an ordinary path that is the path
/// as sent; a key with a `.` segment is sent with its slashes as `%2F` (the
/// URL would otherwise be normalised, store/http.rs) but signed with them
/// literal, as Garage checks it.
fn canonical_path(sent: &str) -> String {
    encode::path(&encode::decode(sent))
}

pub(super) fn oss_authorization(req: &RequestParts, creds: &Credentials, region: &str) -> String {
    let oss_date = req.header("x-oss-date").unwrap_or_default();
    let payload = req
        .header("x-oss-content-sha256")
        .unwrap_or("UNSIGNED-PAYLOAD");
    let uri = match (&req.bucket, &req.key) {
        (Some(b), Some(k)) => format!("/{b}/{}", encode::path(k)),
        (Some(b), None) => format!("/{b}/"),
        (None, _) => "/".to_string(),
    };
    let mut headers: Vec<(String, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .filter(|(n, _)| n.starts_with("x-oss-") || n == "content-type" || n == "content-md5")
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical_request = format!(
        "{}\n{uri}\n{}\n{canonical_headers}\n\n{payload}",
        req.method,
        canonical_query(req, true),
    );
    let scope = format!("{}/{region}/oss/aliyun_v4_request", scope_date(oss_date));
    let string_to_sign = format!(
        "OSS4-HMAC-SHA256\n{oss_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let mut key = hmac_sha256(
        format!("aliyun_v4{}", creds.secret_access_key.expose()).as_bytes(),
        scope_date(oss_date).as_bytes(),
    );
    for part in [region, "oss", "aliyun_v4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "OSS4-HMAC-SHA256 Credential={}/{scope}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> RequestParts {
        RequestParts {
            method: "PUT".into(),
            bucket: Some("b".into()),
            key: Some("tree/./dot".into()),
            path: path.into(),
            query: Vec::new(),
            headers: vec![
                ("host".into(), "127.0.0.1:3900".into()),
                ("x-amz-date".into(), "20261130T000000Z".into()),
                ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
            ],
        }
    }

    /// Found against Garage: a key with a `.` segment, sent with `%2F`
    /// slashes so the URL is not normalised, is signed with literal slashes
    /// (Garage refused the other form as an invalid signature).
    #[test]
    fn dot_segment_keys_sign_with_literal_slashes() {
        let creds = Credentials::new("GK0000", "secret");
        let sent = s3_authorization(&parts("/b/tree%2F.%2Fdot"), &creds, "garage");
        let literal = s3_authorization(&parts("/b/tree/./dot"), &creds, "garage");
        assert_eq!(sent, literal);
        assert_eq!(canonical_path("/b/a%20b/c%2Bd"), "/b/a%20b/c%2Bd");
    }
}
