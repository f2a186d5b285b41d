//! Tencent COS XML API signature (`q-sign-algorithm=sha1&...`).
//!
//! 1. The key window `q-key-time` is `now-60;now+10000` (the SDK's default
//!    validity, which tolerates a minute of clock skew) and doubles as
//!    `q-sign-time`.
//! 2. The HttpString signs the RAW key (`/` + decoded UTF-8), every query
//!    parameter (an empty value still gives `name=`), and only a fixed list
//!    of standard headers plus `x-cos-*`/`x-ci-*`; names are lower-cased,
//!    names and values strictly percent-encoded.

use super::{RequestParts, hmac_sha1};
use crate::store::credentials::Credentials;
use crate::store::encode;
use sha1::Digest;

/// Standard headers COS signs when present (cos-python-sdk-v5 `CosS3Auth`).
const SIGNED_STANDARD_HEADERS: &[&str] = &[
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-type",
    "content-md5",
    "content-length",
    "expect",
    "expires",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-unmodified-since",
    "origin",
    "range",
    "transfer-encoding",
    "pic-operations",
];

/// Seconds before `now` the signature is already valid (clock-skew allowance).
const VALID_BEFORE_SECS: i64 = 60;
/// Seconds after `now` the signature stays valid: long enough for a slow
/// multi-GiB part upload to finish.
const VALID_AFTER_SECS: i64 = 10_000;

/// Encoded, lower-cased, sorted `name=value` pairs and the `;`-joined name list.
fn encoded_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> (String, String) {
    let mut encoded: Vec<(String, String)> = pairs
        .map(|(n, v)| (encode::strict(n).to_ascii_lowercase(), encode::strict(v)))
        .collect();
    encoded.sort();
    let joined = encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let names = encoded
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    (joined, names)
}

pub(super) fn authorization(req: &RequestParts, creds: &Credentials, now: i64) -> String {
    let key_time = format!("{};{}", now - VALID_BEFORE_SECS, now + VALID_AFTER_SECS);
    authorization_for_window(req, creds, &key_time)
}

/// The Authorization value for a given `q-key-time` window (`start;end`):
/// a verifier recomputes it with the window the client chose.
pub(super) fn authorization_for_window(
    req: &RequestParts,
    creds: &Credentials,
    key_time: &str,
) -> String {
    let sign_key = hex::encode(hmac_sha1(
        creds.secret_access_key.expose().as_bytes(),
        key_time.as_bytes(),
    ));
    let (params, param_list) = encoded_pairs(
        req.query
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref().unwrap_or(""))),
    );
    let (headers, header_list) = encoded_pairs(
        req.headers
            .iter()
            .filter(|(n, _)| {
                let n = n.to_ascii_lowercase();
                SIGNED_STANDARD_HEADERS.contains(&n.as_str())
                    || n.starts_with("x-cos-")
                    || n.starts_with("x-ci-")
            })
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    let http_string = format!(
        "{}\n/{}\n{params}\n{headers}\n",
        req.method.to_ascii_lowercase(),
        req.key.as_deref().unwrap_or(""),
    );
    let string_to_sign = format!(
        "sha1\n{key_time}\n{}\n",
        hex::encode(sha1::Sha1::digest(http_string.as_bytes()))
    );
    let signature = hex::encode(hmac_sha1(sign_key.as_bytes(), string_to_sign.as_bytes()));
    format!(
        "q-sign-algorithm=sha1&q-ak={}&q-sign-time={key_time}&q-key-time={key_time}\
         &q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signature}",
        creds.access_key_id
    )
}
