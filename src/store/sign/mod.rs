//! Request signing for every dialect: S3 SigV4 and SigV2, OSS V1 and V4,
//! OBS (native and AWS-V2-compatible) and COS.
//!
//! A [`Signer`] works on [`RequestParts`], a transport-neutral view of the
//! request: method, bucket, decoded key, the path as sent, the decoded query
//! in the order sent, and headers. Signing is two steps:
//!
//! 1. [`Signer::prepare`] adds what the algorithm needs on the wire: the date
//!    header in its dialect's form, `x-amz-content-sha256`/`x-oss-content-sha256`,
//!    the session-token header.
//! 2. [`Signer::authorization`] computes the `Authorization` value from the
//!    request as it stands. It is pure (the clock is an argument), which is how
//!    the test vectors in `../shared/vectors` check it.
//!
//! Subtle cases, all pinned by the vectors:
//! 1. The algorithms disagree on how the key enters the signature: SigV4 signs
//!    the path as sent, SigV2/OBS sign `quote(key, safe="/~")`, OSS V1 and COS
//!    sign the raw UTF-8 key, OSS V4 encodes it itself.
//! 2. Which query parameters are signed differs: all of them (SigV4, OSS V4,
//!    COS) or only a vendor list of sub-resources (SigV2, OSS V1, OBS).
//! 3. Which headers are signed differs; each algorithm picks its own from the
//!    headers present, so extra headers (User-Agent, Accept, Range) never break
//!    a signature where the algorithm does not sign them.

mod cos;
mod hmac_sha1;
mod sigv4;

use super::credentials::Credentials;

/// The signature algorithms, one per wire format of `Authorization`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignatureVersion {
    /// AWS Signature Version 4 (`AWS4-HMAC-SHA256`).
    S3V4,
    /// AWS Signature Version 2 (`AWS AK:sig`), HMAC-SHA1.
    S3V2,
    /// Alibaba OSS signature V1 (`OSS AK:sig`), HMAC-SHA1.
    OssV1,
    /// Alibaba OSS signature V4 (`OSS4-HMAC-SHA256`).
    OssV4,
    /// Huawei OBS native signature (`OBS AK:sig`), HMAC-SHA1.
    Obs,
    /// Huawei OBS AWS-V2-compatible signature (`AWS AK:sig` with `x-amz-` headers).
    ObsV2,
    /// Tencent COS XML API signature (`q-sign-algorithm=sha1&...`).
    Cos,
}

impl SignatureVersion {
    /// Every algorithm, for tests that must cover them all.
    pub const ALL: [SignatureVersion; 7] = [
        SignatureVersion::S3V4,
        SignatureVersion::S3V2,
        SignatureVersion::OssV1,
        SignatureVersion::OssV4,
        SignatureVersion::Obs,
        SignatureVersion::ObsV2,
        SignatureVersion::Cos,
    ];

    /// The header that carries a session token for temporary credentials.
    pub fn security_token_header(self) -> &'static str {
        match self {
            SignatureVersion::S3V4 | SignatureVersion::S3V2 | SignatureVersion::ObsV2 => {
                "x-amz-security-token"
            }
            SignatureVersion::OssV1 | SignatureVersion::OssV4 => "x-oss-security-token",
            SignatureVersion::Obs => "x-obs-security-token",
            SignatureVersion::Cos => "x-cos-security-token",
        }
    }
}

/// A request as the signers see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestParts {
    /// Upper-case HTTP method.
    pub method: String,
    /// Bucket name, `None` for service-level requests.
    pub bucket: Option<String>,
    /// Object key, decoded; `None` for bucket-level requests.
    pub key: Option<String>,
    /// The request path exactly as sent (percent-encoded).
    pub path: String,
    /// Query parameters in the order sent, decoded. `None` means the name was
    /// sent without `=` (`?uploads`), `Some("")` means `name=`.
    pub query: Vec<(String, Option<String>)>,
    /// Headers, names in any case.
    pub headers: Vec<(String, String)>,
}

impl RequestParts {
    /// The value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets a header, replacing any existing one of the same name.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.into()));
    }
}

/// A configured signer: the algorithm plus the region where it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    pub version: SignatureVersion,
    /// Signing region (SigV4, OSS V4); ignored by the others.
    pub region: String,
}

/// SHA-256 of the empty body, sent as `x-amz-content-sha256` on body-less requests.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Signer {
    pub fn new(version: SignatureVersion, region: impl Into<String>) -> Self {
        Signer {
            version,
            region: region.into(),
        }
    }

    /// Adds the headers the algorithm needs on the wire at time `now` (Unix
    /// seconds). `payload_sha256` is the hex SHA-256 of the body for SigV4.
    pub fn prepare(
        &self,
        req: &mut RequestParts,
        creds: &Credentials,
        now: i64,
        payload_sha256: &str,
    ) {
        match self.version {
            SignatureVersion::S3V4 => {
                req.set_header("x-amz-date", iso8601_basic(now));
                req.set_header("x-amz-content-sha256", payload_sha256);
            }
            SignatureVersion::OssV4 => {
                req.set_header("x-oss-date", iso8601_basic(now));
                req.set_header("x-oss-content-sha256", "UNSIGNED-PAYLOAD");
            }
            SignatureVersion::S3V2
            | SignatureVersion::OssV1
            | SignatureVersion::Obs
            | SignatureVersion::ObsV2 => req.set_header("Date", http_date(now)),
            // COS carries its validity window inside the Authorization value.
            SignatureVersion::Cos => {}
        }
        if let Some(token) = &creds.session_token {
            req.set_header(self.version.security_token_header(), token.expose());
        }
    }

    /// The `Authorization` header value for `req` as it stands.
    pub fn authorization(&self, req: &RequestParts, creds: &Credentials, now: i64) -> String {
        match self.version {
            SignatureVersion::S3V4 => sigv4::s3_authorization(req, creds, &self.region),
            SignatureVersion::OssV4 => sigv4::oss_authorization(req, creds, &self.region),
            SignatureVersion::S3V2 => hmac_sha1::authorization(&hmac_sha1::S3V2, req, creds),
            SignatureVersion::OssV1 => hmac_sha1::authorization(&hmac_sha1::OSS_V1, req, creds),
            SignatureVersion::Obs => hmac_sha1::authorization(&hmac_sha1::OBS, req, creds),
            SignatureVersion::ObsV2 => hmac_sha1::authorization(&hmac_sha1::OBS_V2, req, creds),
            SignatureVersion::Cos => cos::authorization(req, creds, now),
        }
    }

    /// Both steps: prepare the request, then add `Authorization`.
    pub fn sign(
        &self,
        req: &mut RequestParts,
        creds: &Credentials,
        now: i64,
        payload_sha256: &str,
    ) {
        self.prepare(req, creds, now, payload_sha256);
        let auth = self.authorization(req, creds, now);
        req.set_header("Authorization", auth);
    }
}

/// Why a request's signature was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No Authorization header.
    Missing,
    /// An Authorization header in no known form.
    Malformed,
    /// The access key id is not known.
    UnknownAccessKey(String),
    /// Known key, wrong signature (wrong secret, or a request changed in transit).
    Mismatch,
}

/// What an Authorization header says before it is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub version: SignatureVersion,
    pub access_key_id: String,
    /// Credential-scope region (SigV4, OSS V4).
    pub region: String,
    /// Headers the client says it signed (SigV4 `SignedHeaders`, COS `q-header-list`).
    pub signed_headers: Option<Vec<String>>,
    /// COS `q-key-time`.
    pub key_time: Option<String>,
}

impl ParsedAuthorization {
    /// Parses `value`; `aws_v2_is_obs` says whether `AWS AK:sig` is OBS's
    /// AWS-compatible mode (on an OBS endpoint) or S3 SigV2.
    pub fn parse(value: &str, aws_v2_is_obs: bool) -> Option<ParsedAuthorization> {
        let value = value.trim();
        let field = |name: &str, sep: char| -> Option<String> {
            let start = value.find(name)? + name.len();
            Some(value[start..].split(sep).next()?.trim().to_string())
        };
        let scoped = |version, rest: &str| -> Option<ParsedAuthorization> {
            let credential = field("Credential=", ',')?;
            let mut scope = credential.split('/');
            let access_key_id = scope.next()?.to_string();
            let _date = scope.next()?;
            let region = scope.next()?.to_string();
            let signed_headers = rest
                .contains("SignedHeaders=")
                .then(|| field("SignedHeaders=", ','))
                .flatten()
                .map(|h| h.split(';').map(str::to_string).collect());
            Some(ParsedAuthorization {
                version,
                access_key_id,
                region,
                signed_headers,
                key_time: None,
            })
        };
        let simple = |version, rest: &str| -> Option<ParsedAuthorization> {
            let (ak, _sig) = rest.rsplit_once(':')?;
            Some(ParsedAuthorization {
                version,
                access_key_id: ak.trim().to_string(),
                region: String::new(),
                signed_headers: None,
                key_time: None,
            })
        };
        if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256 ") {
            scoped(SignatureVersion::S3V4, rest)
        } else if let Some(rest) = value.strip_prefix("OSS4-HMAC-SHA256 ") {
            scoped(SignatureVersion::OssV4, rest)
        } else if let Some(rest) = value.strip_prefix("OSS ") {
            simple(SignatureVersion::OssV1, rest)
        } else if let Some(rest) = value.strip_prefix("OBS ") {
            simple(SignatureVersion::Obs, rest)
        } else if let Some(rest) = value.strip_prefix("AWS ") {
            let version = if aws_v2_is_obs {
                SignatureVersion::ObsV2
            } else {
                SignatureVersion::S3V2
            };
            simple(version, rest)
        } else if value.starts_with("q-sign-algorithm=sha1&") {
            Some(ParsedAuthorization {
                version: SignatureVersion::Cos,
                access_key_id: field("q-ak=", '&')?,
                region: String::new(),
                signed_headers: Some(
                    field("q-header-list=", '&')?
                        .split(';')
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
                key_time: Some(field("q-key-time=", '&')?),
            })
        } else {
            None
        }
    }
}

/// Checks the `Authorization` header of a received request (server side).
/// `req` holds the request as received; `secret_for` looks up the
/// credentials of an access key id. A session-token header, when present,
/// is taken into the credentials as sent.
pub fn verify(
    req: &RequestParts,
    aws_v2_is_obs: bool,
    secret_for: impl Fn(&str) -> Option<Credentials>,
) -> Result<ParsedAuthorization, VerifyError> {
    let auth = req.header("authorization").ok_or(VerifyError::Missing)?;
    let parsed = ParsedAuthorization::parse(auth, aws_v2_is_obs).ok_or(VerifyError::Malformed)?;
    let mut creds = secret_for(&parsed.access_key_id)
        .ok_or_else(|| VerifyError::UnknownAccessKey(parsed.access_key_id.clone()))?;
    if let Some(token) = req.header(parsed.version.security_token_header()) {
        creds = creds.with_session_token(token);
    }
    let mut signed = req.clone();
    signed
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("authorization"));
    // Where the client lists what it signed, sign exactly that: transports
    // add headers (Content-Length, Accept-Encoding) after signing.
    if let Some(list) = &parsed.signed_headers {
        signed
            .headers
            .retain(|(n, _)| list.iter().any(|l| l.eq_ignore_ascii_case(n)));
    }
    let signer = Signer::new(parsed.version, parsed.region.clone());
    let expected = match (&parsed.key_time, parsed.version) {
        (Some(key_time), SignatureVersion::Cos) => {
            cos::authorization_for_window(&signed, &creds, key_time)
        }
        (_, SignatureVersion::S3V4) if parsed.signed_headers.is_some() => {
            sigv4::s3_authorization_exact(&signed, &creds, &parsed.region)
        }
        _ => signer.authorization(&signed, &creds, 0),
    };
    use subtle::ConstantTimeEq;
    // Compared without an early exit, so timing tells nothing about the secret.
    if bool::from(expected.as_bytes().ct_eq(auth.trim().as_bytes())) {
        Ok(parsed)
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// `yyyymmddThhmmssZ`, the date form of SigV4 and OSS V4.
pub fn iso8601_basic(unix: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// RFC 1123 date (`Tue, 05 Mar 2024 07:24:19 GMT`), the `Date` header form.
pub fn http_date(unix: i64) -> String {
    let secs = u64::try_from(unix).unwrap_or(0);
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

pub(crate) fn hmac_sha1(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_formats() {
        assert_eq!(iso8601_basic(1709623459), "20240305T072419Z");
        assert_eq!(http_date(1709623459), "Tue, 05 Mar 2024 07:24:19 GMT");
    }

    #[test]
    fn prepare_adds_date_and_token_headers_per_algorithm() {
        let creds = Credentials::new("AK", "SK").with_session_token("TOKEN");
        for (v, date, token) in [
            (SignatureVersion::S3V4, "x-amz-date", "x-amz-security-token"),
            (
                SignatureVersion::OssV4,
                "x-oss-date",
                "x-oss-security-token",
            ),
            (SignatureVersion::Obs, "Date", "x-obs-security-token"),
            (SignatureVersion::ObsV2, "Date", "x-amz-security-token"),
            (SignatureVersion::OssV1, "Date", "x-oss-security-token"),
        ] {
            let mut req = RequestParts::default();
            Signer::new(v, "r").prepare(&mut req, &creds, 1709623459, EMPTY_SHA256);
            assert!(req.header(date).is_some(), "{v:?} lacks {date}");
            assert_eq!(req.header(token), Some("TOKEN"), "{v:?}");
        }
    }

    /// A client that signs `content-length` (rclone's Go SDK does) is
    /// checked against what it listed, and a changed length is caught.
    #[test]
    fn sigv4_verifies_clients_that_sign_the_content_length() {
        let creds = Credentials::new("AK", "SK");
        let mut req = RequestParts {
            method: "PUT".into(),
            bucket: Some("b".into()),
            key: Some("k".into()),
            path: "/b/k".into(),
            headers: vec![
                ("Host".into(), "127.0.0.1:9000".into()),
                ("Content-Length".into(), "5".into()),
                ("X-Amz-Content-Sha256".into(), "UNSIGNED-PAYLOAD".into()),
                ("X-Amz-Date".into(), "20261207T181334Z".into()),
            ],
            ..Default::default()
        };
        let auth = sigv4::s3_authorization_exact(&req, &creds, "us-east-1");
        assert!(
            auth.contains("SignedHeaders=content-length;host;"),
            "{auth}"
        );
        req.headers.push(("Authorization".into(), auth));
        req.headers.push(("Accept-Encoding".into(), "gzip".into()));
        let secret = |_: &str| Some(Credentials::new("AK", "SK"));
        assert!(verify(&req, false, secret).is_ok());
        req.headers[1].1 = "6".into();
        assert!(matches!(
            verify(&req, false, secret),
            Err(VerifyError::Mismatch)
        ));
    }
}
