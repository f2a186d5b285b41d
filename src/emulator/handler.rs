//! One request in, one response out: authentication, routing to an
//! operation, and the operation itself on the bucket's [`MemoryStore`].
//!
//! The object semantics (append positions, multipart rules, ranges, native
//! rename) live in [`MemoryStore`]; this module speaks HTTP and each
//! dialect's spelling of it. Subtle cases:
//! 1. Requests to `/-/...` are the admin endpoint (stats) and need no
//!    signature; nor does the OBS `HEAD /?apiversion` probe (below); every
//!    other request must carry a valid one.
//! 2. OBS SDKs probe `HEAD /?apiversion` (unsigned) and sign natively only
//!    when the answer carries `x-obs-api: 3.0`, so OBS answers every request
//!    with it.
//! 3. A 409 PositionNotEqualToLength carries the object's length in
//!    `x-*-next-append-position` (oss2 needs an integer there).
//! 4. Listing continuation tokens are the base64url of the last key or
//!    prefix returned: URL-safe as boto3 passes them back verbatim.

use super::stats::Stats;
use super::wire::{self, Target};
use crate::store::credentials::Credentials;
use crate::store::dialect::{Dialect, Provider};
use crate::store::memory::MemoryStore;
use crate::store::sign::{self, RequestParts, VerifyError};
use crate::store::xml::escape;
use crate::store::*;
use base64::Engine;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// A bucket to serve and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    /// OSS hierarchical namespace (native rename, CreateDirectory).
    pub hierarchical_namespace: bool,
    /// OBS parallel file system (modify, truncate, rename).
    pub pfs: bool,
}

impl BucketSpec {
    /// Parses `NAME`, `NAME:hns` or `NAME:pfs`.
    pub fn parse(s: &str) -> Result<BucketSpec, String> {
        let (name, kind) = match s.split_once(':') {
            Some((n, k)) => (n, Some(k)),
            None => (s, None),
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!("bad bucket name {name:?}"));
        }
        let mut spec = BucketSpec {
            name: name.to_string(),
            hierarchical_namespace: false,
            pfs: false,
        };
        match kind {
            None => {}
            Some("hns") => spec.hierarchical_namespace = true,
            Some("pfs") => spec.pfs = true,
            Some(other) => return Err(format!("unknown bucket type {other:?} (use hns or pfs)")),
        }
        Ok(spec)
    }
}

/// A request as received.
#[derive(Clone, Debug, Default)]
pub struct Incoming {
    pub method: String,
    pub host: String,
    /// Raw path, percent-encoded as sent.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response to send.
#[derive(Clone, Debug, Default)]
pub struct Outgoing {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Outgoing {
    fn ok() -> Outgoing {
        Outgoing {
            status: 200,
            ..Default::default()
        }
    }

    fn xml(body: String) -> Outgoing {
        Outgoing {
            status: 200,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: Bytes::from(body),
        }
    }

    fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Outgoing {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A failed request: status, vendor code, message, extra headers.
#[derive(Debug)]
struct Failure {
    status: u16,
    code: String,
    message: String,
    headers: Vec<(String, String)>,
    /// For PositionNotEqualToLength: the object's length, sent in the
    /// dialect's `x-*-next-append-position` header.
    next_append_position: Option<u64>,
}

fn fail(status: u16, code: &str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code: code.to_string(),
        message: message.into(),
        headers: Vec::new(),
        next_append_position: None,
    }
}

type Handled = Result<Outgoing, Failure>;

/// Internal marker (never sent): a GET raced a replacement of its object
/// and is retried.
const RACED: u16 = 599;

/// The emulated service: buckets, credentials, counters.
pub struct Emulator {
    provider: Provider,
    buckets: HashMap<String, MemoryStore>,
    credentials: Credentials,
    pub stats: Stats,
    request_ids: AtomicU64,
}

impl Emulator {
    pub fn new(provider: Provider, buckets: &[BucketSpec], credentials: Credentials) -> Emulator {
        let buckets = buckets
            .iter()
            .map(|spec| {
                let info = BucketInfo {
                    region: None,
                    obs_pfs: spec.pfs,
                    oss_hierarchical_namespace: spec.hierarchical_namespace,
                };
                let store =
                    MemoryStore::new(Dialect::new(provider), &spec.name).with_bucket_info(info);
                (spec.name.clone(), store)
            })
            .collect();
        Emulator {
            provider,
            buckets,
            credentials,
            stats: Stats::default(),
            request_ids: AtomicU64::new(1),
        }
    }

    /// Records which keys change in every bucket (for saving them to disk).
    pub fn track_changes(mut self) -> Emulator {
        self.buckets = self
            .buckets
            .into_iter()
            .map(|(name, store)| (name, store.track_changes()))
            .collect();
        self
    }

    /// The buckets served, by name.
    pub fn stores(&self) -> &HashMap<String, MemoryStore> {
        &self.buckets
    }

    /// Answers one request.
    pub async fn handle(&self, req: Incoming) -> Outgoing {
        if let Some(admin) = req.path.strip_prefix("/-/") {
            return self.admin(&req.method, admin);
        }
        let request_id = format!("{:016X}", self.request_ids.fetch_add(1, Ordering::Relaxed));
        let target = wire::target(&req.host, &req.path);
        let query = wire::query_pairs(&req.query);
        let op = operation(&req, &target, &query);
        let prefix = wire::response_prefix(self.provider);
        let result = if op == Op::ObsApiVersion && self.provider == Provider::Obs {
            // esdk-obs-python sends the probe unsigned (`skipAuthentication`)
            // and treats a 404 as "no answer": it needs no bucket or signature.
            Ok(Outgoing::ok())
        } else {
            match self.authenticate(&req, &target, &query) {
                Ok(()) => self.dispatch(op, &req, &target, &query).await,
                Err(f) => Err(f),
            }
        };
        let mut out = match result {
            Ok(out) => out,
            Err(f) => {
                let resource = req.path.clone();
                let mut out = Outgoing {
                    status: f.status,
                    headers: vec![("Content-Type".into(), "application/xml".into())],
                    body: Bytes::from(wire::error_body(
                        &f.code,
                        &f.message,
                        &resource,
                        &request_id,
                    )),
                };
                out.headers.extend(f.headers);
                if let Some(next) = f.next_append_position {
                    out.headers
                        .push((format!("{prefix}next-append-position"), next.to_string()));
                }
                if req.method == "HEAD" {
                    out.body = Bytes::new();
                }
                out
            }
        };
        out.headers
            .push((format!("{prefix}request-id"), request_id));
        if self.provider == Provider::Obs {
            out.headers.push(("x-obs-api".into(), "3.0".into()));
        }
        self.stats
            .record(op.name(), req.body.len() as u64, out.body.len() as u64);
        out
    }

    fn admin(&self, method: &str, path: &str) -> Outgoing {
        let json = |body: String| Outgoing {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Bytes::from(body),
        };
        match (method, path) {
            ("GET", "stats") => json(self.stats.to_json()),
            ("POST", "stats/reset") => {
                self.stats.reset();
                json("{}".into())
            }
            _ => Outgoing {
                status: 404,
                body: Bytes::from_static(b"unknown admin endpoint\n"),
                ..Default::default()
            },
        }
    }

    fn authenticate(
        &self,
        req: &Incoming,
        target: &Target,
        query: &[(String, Option<String>)],
    ) -> Result<(), Failure> {
        if req.header("authorization").is_none() {
            return Err(fail(
                403,
                "AccessDenied",
                "Anonymous access is forbidden for this operation.",
            ));
        }
        let parts = RequestParts {
            method: req.method.clone(),
            bucket: target.bucket.clone(),
            key: target.key.clone(),
            path: req.path.clone(),
            query: query.to_vec(),
            headers: std::iter::once(("host".to_string(), req.host.clone()))
                .chain(
                    req.headers
                        .iter()
                        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
                        .cloned(),
                )
                .collect(),
        };
        let verify = |parts: &RequestParts| {
            sign::verify(parts, self.provider == Provider::Obs, |ak| {
                (ak == self.credentials.access_key_id).then(|| self.credentials.clone())
            })
        };
        let mut result = verify(&parts);
        let hostname = wire::host_without_port(&req.host);
        if self.provider == Provider::Cos
            && matches!(result, Err(VerifyError::Mismatch))
            && hostname != req.host
        {
            // cos-python-sdk-v5 signs `urlparse(url).hostname`: the Host it
            // sends has the port, the host it signs has not. Other clients
            // sign the Host as sent, which the first attempt checked.
            let mut without_port = parts;
            without_port.set_header("host", hostname);
            result = verify(&without_port);
        }
        match result {
            Ok(_) => Ok(()),
            Err(VerifyError::UnknownAccessKey(_)) => Err(fail(
                403,
                "InvalidAccessKeyId",
                "The access key Id you provided does not exist in our records.",
            )),
            Err(VerifyError::Mismatch) => Err(fail(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )),
            Err(VerifyError::Missing | VerifyError::Malformed) => Err(fail(
                400,
                "InvalidArgument",
                "Authorization header is invalid.",
            )),
        }
    }

    fn bucket(&self, target: &Target) -> Result<&MemoryStore, Failure> {
        let name = target.bucket.as_deref().unwrap_or_default();
        self.buckets
            .get(name)
            .ok_or_else(|| fail(404, "NoSuchBucket", "The specified bucket does not exist."))
    }

    async fn dispatch(
        &self,
        op: Op,
        req: &Incoming,
        target: &Target,
        query: &[(String, Option<String>)],
    ) -> Handled {
        let store = self.bucket(target)?;
        let key = target.key.clone().unwrap_or_default();
        let param = |name: &str| param(query, name);
        let prefix = wire::response_prefix(self.provider);
        match op {
            Op::Store(Operation::HeadBucket) => {
                let mut out = Outgoing::ok().header(format!("{prefix}bucket-location"), "local");
                if store.dialect().capabilities.modify_at_offset {
                    out = out.header("x-obs-fs-file-interface", "Enabled");
                }
                Ok(out)
            }
            Op::GetBucketInfo => {
                let hns = if store.dialect().capabilities.native_rename_dir {
                    "Enabled"
                } else {
                    "Disabled"
                };
                let mut inner = String::from("<Bucket>");
                wire::element(&mut inner, "Name", store.bucket());
                wire::element(&mut inner, "Location", "oss-local");
                wire::element(&mut inner, "HierarchicalNamespace", hns);
                inner.push_str("</Bucket>");
                Ok(Outgoing::xml(wire::document(
                    self.provider,
                    "BucketInfo",
                    &inner,
                )))
            }
            Op::Store(Operation::ListObjectsV2) | Op::Store(Operation::ListObjects) => {
                self.list(store, op == Op::Store(Operation::ListObjectsV2), query)
                    .await
            }
            Op::Store(Operation::HeadObject) => {
                let meta = store.head_object(&key).await?;
                Ok(self.object_headers(Outgoing::ok(), &meta, None))
            }
            Op::Store(Operation::GetObject) => self.get(store, req, &key).await,
            Op::Store(Operation::PutObject) => {
                let attributes = self.attributes(req);
                let resp = store
                    .put_object(&PutRequest {
                        key,
                        body: req.body.clone(),
                        attributes,
                    })
                    .await?;
                Ok(self.write_headers(Outgoing::ok(), &resp.etag, resp.crc64))
            }
            Op::Store(Operation::AppendObject) => {
                let position: u64 =
                    param("position")
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| {
                            fail(400, "InvalidArgument", "append needs a numeric position")
                        })?;
                let resp = store
                    .append_object(&AppendRequest {
                        key,
                        position,
                        body: req.body.clone(),
                        attributes: self.attributes(req),
                    })
                    .await?;
                let mut out = Outgoing::ok().header(
                    format!("{prefix}next-append-position"),
                    resp.next_position.to_string(),
                );
                if let Some(etag) = &resp.etag {
                    out = out.header("ETag", format!("\"{etag}\""));
                }
                if let (Some(h), Some(crc)) = (store.dialect().crc64_header, resp.crc64) {
                    out = out.header(h, crc.to_string());
                }
                Ok(out)
            }
            Op::Store(Operation::CreateMultipartUpload) => {
                let upload_id = store
                    .create_multipart_upload(&key, &self.attributes(req))
                    .await?;
                let mut inner = String::new();
                wire::element(&mut inner, "Bucket", store.bucket());
                wire::element(&mut inner, "Key", &key);
                wire::element(&mut inner, "UploadId", &upload_id);
                Ok(Outgoing::xml(wire::document(
                    self.provider,
                    "InitiateMultipartUploadResult",
                    &inner,
                )))
            }
            Op::Store(Operation::UploadPart) => {
                let part = store
                    .upload_part(&UploadPartRequest {
                        key,
                        upload_id: param("uploadId").unwrap_or_default().to_string(),
                        part_number: part_number(query)?,
                        body: req.body.clone(),
                    })
                    .await?;
                let crc = store.dialect().crc64_header.map(|_| crc64(&req.body));
                Ok(self.write_headers(Outgoing::ok(), &part.etag, crc))
            }
            Op::Store(Operation::UploadPartCopy) => {
                let source = self.copy_source(req)?;
                let source_range = match self.vendor_header(req, "copy-source-range") {
                    Some(r) => Some(copy_range(r)?),
                    None => None,
                };
                let part = store
                    .upload_part_copy(&UploadPartCopyRequest {
                        key,
                        upload_id: param("uploadId").unwrap_or_default().to_string(),
                        part_number: part_number(query)?,
                        source_key: source,
                        source_range,
                        source_if_match: self.copy_if_match(req),
                    })
                    .await?;
                Ok(Outgoing::xml(copy_result(
                    self.provider,
                    "CopyPartResult",
                    &part.etag,
                )))
            }
            Op::Store(Operation::CompleteMultipartUpload) => {
                let body = std::str::from_utf8(&req.body).unwrap_or_default();
                let parts = wire::parse_complete_parts(body)
                    .ok_or_else(|| fail(400, "MalformedXML", "cannot read the part list"))?
                    .into_iter()
                    .map(|(part_number, etag)| CompletedPart { part_number, etag })
                    .collect();
                let resp = store
                    .complete_multipart_upload(&CompleteMultipartRequest {
                        key: key.clone(),
                        upload_id: param("uploadId").unwrap_or_default().to_string(),
                        parts,
                    })
                    .await?;
                let mut inner = String::new();
                wire::element(
                    &mut inner,
                    "Location",
                    &format!("/{}/{key}", store.bucket()),
                );
                wire::element(&mut inner, "Bucket", store.bucket());
                wire::element(&mut inner, "Key", &key);
                wire::element(&mut inner, "ETag", &format!("\"{}\"", resp.etag));
                let out = Outgoing::xml(wire::document(
                    self.provider,
                    "CompleteMultipartUploadResult",
                    &inner,
                ));
                Ok(self.write_headers(out, &resp.etag, resp.crc64))
            }
            Op::Store(Operation::AbortMultipartUpload) => {
                store
                    .abort_multipart_upload(&key, param("uploadId").unwrap_or_default())
                    .await?;
                Ok(Outgoing {
                    status: 204,
                    ..Default::default()
                })
            }
            Op::Store(Operation::ListMultipartUploads) => {
                let prefix = param("prefix").unwrap_or_default();
                let marker = param("key-marker").filter(|k| !k.is_empty()).map(|k| {
                    (
                        k.to_string(),
                        param("upload-id-marker").unwrap_or_default().to_string(),
                    )
                });
                let page = store
                    .list_multipart_uploads(prefix, marker.as_ref())
                    .await?;
                let mut inner = String::new();
                wire::element(&mut inner, "Bucket", store.bucket());
                wire::element(&mut inner, "Prefix", prefix);
                wire::element(
                    &mut inner,
                    "IsTruncated",
                    if page.next.is_some() { "true" } else { "false" },
                );
                if let Some((key, id)) = &page.next {
                    wire::element(&mut inner, "NextKeyMarker", key);
                    wire::element(&mut inner, "NextUploadIdMarker", id);
                }
                for u in &page.uploads {
                    inner.push_str("<Upload>");
                    wire::element(&mut inner, "Key", &u.key);
                    wire::element(&mut inner, "UploadId", &u.upload_id);
                    if let Some(t) = u.initiated {
                        wire::element(&mut inner, "Initiated", &wire::iso8601(t));
                    }
                    inner.push_str("</Upload>");
                }
                Ok(Outgoing::xml(wire::document(
                    self.provider,
                    "ListMultipartUploadsResult",
                    &inner,
                )))
            }
            Op::Store(Operation::ListParts) => {
                let upload_id = param("uploadId").unwrap_or_default();
                let number = |name: &str| -> Result<Option<u32>, Failure> {
                    match param(name).filter(|v| !v.is_empty()) {
                        Some(v) => v.parse().map(Some).map_err(|_| {
                            fail(400, "InvalidArgument", format!("{name} is not a number"))
                        }),
                        None => Ok(None),
                    }
                };
                let marker = number("part-number-marker")?.unwrap_or(0);
                let max_parts = number("max-parts")?.unwrap_or(1000).max(1) as usize;
                let mut parts: Vec<_> = store
                    .list_parts(&key, upload_id)
                    .await?
                    .into_iter()
                    .filter(|p| p.part_number > marker)
                    .collect();
                let truncated = parts.len() > max_parts;
                parts.truncate(max_parts);
                let next = parts.last().map_or(marker, |p| p.part_number);
                // oss2 requires NextPartNumberMarker and each part's
                // LastModified (OSS API reference, 8.3.7 ListParts); the store
                // keeps no part times, so parts are dated now.
                let now = wire::iso8601(std::time::SystemTime::now());
                let mut inner = String::new();
                wire::element(&mut inner, "Bucket", store.bucket());
                wire::element(&mut inner, "Key", &key);
                wire::element(&mut inner, "UploadId", upload_id);
                wire::element(&mut inner, "PartNumberMarker", &marker.to_string());
                wire::element(&mut inner, "NextPartNumberMarker", &next.to_string());
                wire::element(&mut inner, "MaxParts", &max_parts.to_string());
                wire::element(
                    &mut inner,
                    "IsTruncated",
                    if truncated { "true" } else { "false" },
                );
                for p in parts {
                    let _ = write!(
                        inner,
                        "<Part><PartNumber>{}</PartNumber><LastModified>{now}</LastModified><ETag>\"{}\"</ETag><Size>{}</Size></Part>",
                        p.part_number,
                        escape(&p.etag),
                        p.size
                    );
                }
                Ok(Outgoing::xml(wire::document(
                    self.provider,
                    "ListPartsResult",
                    &inner,
                )))
            }
            Op::Store(Operation::CopyObject) => {
                let source_key = self.copy_source(req)?;
                let directive = match self.vendor_header(req, "metadata-directive") {
                    Some(d) if d.to_ascii_lowercase().starts_with("replace") => {
                        MetadataDirective::Replace(self.attributes(req))
                    }
                    _ => MetadataDirective::Copy,
                };
                let resp = store
                    .copy_object(&CopyRequest {
                        source_key,
                        dest_key: key,
                        directive,
                        source_if_match: self.copy_if_match(req),
                    })
                    .await?;
                let out = Outgoing::xml(copy_result(self.provider, "CopyObjectResult", &resp.etag));
                Ok(self.write_headers(out, &resp.etag, resp.crc64))
            }
            Op::Store(Operation::DeleteObject) => {
                store.delete_object(&key).await?;
                Ok(Outgoing {
                    status: 204,
                    ..Default::default()
                })
            }
            Op::Store(Operation::DeleteObjects) => {
                let body = std::str::from_utf8(&req.body).unwrap_or_default();
                let (keys, quiet) = wire::parse_delete_keys(body)
                    .ok_or_else(|| fail(400, "MalformedXML", "cannot read the key list"))?;
                let result = store.delete_objects(&keys).await?;
                let mut inner = String::new();
                if !quiet {
                    for k in &result.deleted {
                        let _ = write!(inner, "<Deleted><Key>{}</Key></Deleted>", escape(k));
                    }
                }
                for e in &result.errors {
                    let _ = write!(
                        inner,
                        "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                        escape(&e.key),
                        escape(&e.code),
                        escape(&e.message)
                    );
                }
                Ok(Outgoing::xml(wire::document(
                    self.provider,
                    "DeleteResult",
                    &inner,
                )))
            }
            // OSS names the destination in the path, the source in a header.
            Op::Store(Operation::RenameObject) if param("x-oss-rename").is_some() => {
                let raw = req.header("x-oss-rename-source").ok_or_else(|| {
                    fail(400, "InvalidArgument", "x-oss-rename-source is missing")
                })?;
                let source = crate::store::encode::decode(raw.trim_start_matches('/'));
                self.rename(store, &source, &key).await
            }
            // OBS names the source in the path, the destination in `name`.
            Op::Store(Operation::RenameObject) => {
                let dest = param("name").unwrap_or_default().to_string();
                self.rename(store, &key, &dest).await
            }
            Op::CreateDirectory => {
                if !store.dialect().capabilities.native_rename_dir {
                    return Err(fail(
                        400,
                        "OperationNotSupported",
                        "not a hierarchical-namespace bucket",
                    ));
                }
                let dir = if key.ends_with('/') {
                    key
                } else {
                    format!("{key}/")
                };
                store
                    .put_object(&PutRequest {
                        key: dir,
                        body: Bytes::new(),
                        attributes: ObjectAttributes::default(),
                    })
                    .await?;
                Ok(Outgoing::ok())
            }
            Op::Store(Operation::ModifyObject) => {
                let position = param("position")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| {
                        fail(400, "InvalidArgument", "modify needs a numeric position")
                    })?;
                store
                    .modify_object(&key, position, req.body.clone())
                    .await?;
                let meta = store.head_object(&key).await?;
                Ok(Outgoing::ok().header("ETag", format!("\"{}\"", meta.etag)))
            }
            Op::Store(Operation::TruncateObject) => {
                let length = param("length")
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| {
                        fail(400, "InvalidArgument", "truncate needs a numeric length")
                    })?;
                store.truncate_object(&key, length).await?;
                Ok(Outgoing {
                    status: 204,
                    ..Default::default()
                })
            }
            Op::Store(Operation::PutSymlink) => {
                let raw = self.vendor_header(req, "symlink-target").ok_or_else(|| {
                    fail(
                        400,
                        "InvalidArgument",
                        format!("{prefix}symlink-target is missing"),
                    )
                })?;
                let target = if store.dialect().symlink_target_encoded {
                    crate::store::encode::decode(raw)
                } else {
                    raw.to_string()
                };
                store
                    .put_symlink(&key, &target, &self.attributes(req))
                    .await?;
                Ok(Outgoing::ok())
            }
            Op::Store(Operation::GetSymlink) => {
                let target = store.get_symlink(&key).await?;
                let value = if store.dialect().symlink_target_encoded {
                    crate::store::encode::strict(&target)
                } else {
                    target
                };
                Ok(Outgoing::ok().header(format!("{prefix}symlink-target"), value))
            }
            Op::ObsApiVersion => Ok(Outgoing::ok()),
            Op::Unknown => Err(fail(
                501,
                "NotImplemented",
                "This operation is not implemented by the emulator.",
            )),
        }
    }

    async fn list(
        &self,
        store: &MemoryStore,
        v2: bool,
        query: &[(String, Option<String>)],
    ) -> Handled {
        let param = |name: &str| param(query, name);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let continuation = if v2 {
            match param("continuation-token").filter(|t| !t.is_empty()) {
                Some(token) => {
                    let bytes = b64.decode(token).map_err(|_| {
                        fail(
                            400,
                            "InvalidArgument",
                            "The continuation token provided is incorrect",
                        )
                    })?;
                    Some(ListContinuation::Marker(
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ))
                }
                None => None,
            }
        } else {
            param("marker")
                .filter(|m| !m.is_empty())
                .map(|m| ListContinuation::Marker(m.to_string()))
        };
        let max_keys = match param("max-keys").filter(|m| !m.is_empty()) {
            Some(m) => Some(
                m.parse::<u32>()
                    .map_err(|_| fail(400, "InvalidArgument", "max-keys is not a number"))?,
            ),
            None => None,
        };
        let request = ListRequest {
            prefix: param("prefix").unwrap_or_default().to_string(),
            delimiter: param("delimiter")
                .filter(|d| !d.is_empty())
                .map(str::to_string),
            continuation,
            start_after: param("start-after")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            max_keys,
        };
        let page = store.list_objects(&request).await?;
        let url = param("encoding-type").is_some_and(|e| e.eq_ignore_ascii_case("url"));
        let enc = |s: &str| {
            if url {
                wire::encode_listing_key(s)
            } else {
                s.to_string()
            }
        };
        let mut inner = String::new();
        wire::element(&mut inner, "Name", store.bucket());
        wire::element(&mut inner, "Prefix", &enc(&request.prefix));
        if v2 {
            if let Some(s) = &request.start_after {
                wire::element(&mut inner, "StartAfter", &enc(s));
            }
            if let Some(t) = param("continuation-token").filter(|t| !t.is_empty()) {
                wire::element(&mut inner, "ContinuationToken", t);
            }
        } else {
            wire::element(
                &mut inner,
                "Marker",
                &enc(param("marker").unwrap_or_default()),
            );
        }
        wire::element(&mut inner, "MaxKeys", &max_keys.unwrap_or(1000).to_string());
        if let Some(d) = &request.delimiter {
            wire::element(&mut inner, "Delimiter", &enc(d));
        }
        if url {
            wire::element(&mut inner, "EncodingType", "url");
        }
        let next = match &page.next {
            Some(ListContinuation::Token(t) | ListContinuation::Marker(t)) => Some(t.clone()),
            None => None,
        };
        wire::element(
            &mut inner,
            "IsTruncated",
            if next.is_some() { "true" } else { "false" },
        );
        if let Some(n) = &next {
            if v2 {
                wire::element(&mut inner, "NextContinuationToken", &b64.encode(n));
            } else {
                wire::element(&mut inner, "NextMarker", &enc(n));
            }
        }
        if v2 {
            let count = page.objects.len() + page.common_prefixes.len();
            wire::element(&mut inner, "KeyCount", &count.to_string());
        }
        for o in &page.objects {
            inner.push_str("<Contents>");
            wire::element(&mut inner, "Key", &enc(&o.key));
            if let Some(t) = o.last_modified {
                wire::element(&mut inner, "LastModified", &wire::iso8601(t));
            }
            wire::element(&mut inner, "ETag", &format!("\"{}\"", o.etag));
            wire::element(&mut inner, "Size", &o.size.to_string());
            wire::element(&mut inner, "StorageClass", "STANDARD");
            if matches!(self.provider, Provider::Oss | Provider::Obs) {
                // oss2 requires `<Type>` in every entry (OSS API reference,
                // 7.1.4 ListObjectsV2: Normal, Appendable, Multipart or
                // Symlink); OBS SDKs read it as `isAppendable`.
                let kind = match store.head_object(&o.key).await {
                    Ok(meta) => object_type_name(meta.object_type),
                    Err(_) => "Normal",
                };
                wire::element(&mut inner, "Type", kind);
            }
            inner.push_str("</Contents>");
        }
        for p in &page.common_prefixes {
            inner.push_str("<CommonPrefixes>");
            wire::element(&mut inner, "Prefix", &enc(p));
            inner.push_str("</CommonPrefixes>");
        }
        Ok(Outgoing::xml(wire::document(
            self.provider,
            "ListBucketResult",
            &inner,
        )))
    }

    async fn get(&self, store: &MemoryStore, req: &Incoming, key: &str) -> Handled {
        // The object may be replaced between the HEAD that checks the
        // conditions and the read: the read is pinned to the HEAD's ETag,
        // and a replacement in between starts over, so the headers and the
        // body always describe one version.
        let mut attempts = 0;
        loop {
            match self.get_once(store, req, key).await {
                Err(e) if e.status == RACED && attempts < 10 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn get_once(&self, store: &MemoryStore, req: &Incoming, key: &str) -> Handled {
        let meta = store.head_object(key).await?;
        if let Some(want) = req.header("if-match") {
            let want = want.trim().trim_matches('"');
            if want != "*" && !want.eq_ignore_ascii_case(&meta.etag) {
                return Err(fail(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                ));
            }
        }
        let range = match req.header("range").map(|r| wire::parse_range(r, meta.size)) {
            // OSS reference 8.1.2 GetObject, Range: "if the value of Range
            // is invalid, the entire object is returned, and the response
            // returned by OSS excludes Content-Range".
            Some(wire::RangeRequest::Unsatisfiable) if self.provider == Provider::Oss => None,
            Some(wire::RangeRequest::Unsatisfiable) => {
                let mut f = fail(
                    416,
                    "InvalidRange",
                    "The requested range is not satisfiable",
                );
                f.headers
                    .push(("Content-Range".into(), format!("bytes */{}", meta.size)));
                return Err(f);
            }
            Some(wire::RangeRequest::Part(r)) => Some(r),
            Some(wire::RangeRequest::Whole) | None => None,
        };
        let got = if meta.size == 0 {
            None
        } else {
            let read = store
                .get_object(&GetRequest {
                    key: key.to_string(),
                    range: range.clone(),
                    if_match: Some(meta.etag.clone()),
                })
                .await;
            match read {
                Err(StoreError::PreconditionFailed(_)) | Err(StoreError::NoSuchKey { .. }) => {
                    return Err(fail(RACED, "Raced", "replaced during the read"));
                }
                other => Some(other?),
            }
        };
        let body = got.as_ref().map(|g| g.body.clone()).unwrap_or_default();
        let mut out = Outgoing::ok();
        if let (Some(r), Some(g)) = (&range, &got) {
            out.status = 206;
            out = out.header(
                "Content-Range",
                format!("bytes {}-{}/{}", g.range.start, g.range.end - 1, meta.size),
            );
            debug_assert_eq!(r.start, g.range.start);
        }
        // A checksum of the whole object is only true for a whole-object read
        // (boto3 validates what it is given).
        let crc = if range.is_none() { meta.crc64 } else { None };
        let mut out = self.object_headers(out, &meta, crc);
        out.body = body;
        Ok(out)
    }

    async fn rename(&self, store: &MemoryStore, source: &str, dest: &str) -> Handled {
        // A directory may be named without its trailing slash.
        let is_file = store.head_object(source).await.is_ok();
        if is_file || source.ends_with('/') {
            store.rename_object(source, dest).await?;
        } else {
            let dir = format!("{}/", source);
            let dest_dir = format!("{}/", dest.trim_end_matches('/'));
            store.rename_object(&dir, &dest_dir).await?;
        }
        Ok(Outgoing::ok())
    }

    fn object_headers(&self, out: Outgoing, meta: &ObjectMeta, crc: Option<u64>) -> Outgoing {
        let prefix = wire::response_prefix(self.provider);
        let mut out = out
            .header("ETag", format!("\"{}\"", meta.etag))
            .header("Accept-Ranges", "bytes")
            .header(
                "Content-Type",
                meta.content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into()),
            );
        match self.provider {
            Provider::S3 => {}
            // COS JavaScript SDK reference (004), headObject: `x-cos-object-type`
            // is `normal` or `appendable`, and `normal` is not returned.
            // Symlinks: the reference is silent on what a HEAD of a COS
            // symlink says; the emulator uses `symlink`, the spelling of
            // the OSS header, which is what the client parses. To confirm
            // against real COS (noted in the issue).
            Provider::Cos => match meta.object_type {
                ObjectType::Appendable => out = out.header("x-cos-object-type", "appendable"),
                ObjectType::Symlink => out = out.header("x-cos-object-type", "symlink"),
                _ => {}
            },
            Provider::Oss | Provider::Obs => {
                out = out.header(
                    format!("{prefix}object-type"),
                    object_type_name(meta.object_type),
                );
            }
        }
        if let Some(t) = meta.last_modified {
            out = out.header("Last-Modified", httpdate::fmt_http_date(t));
        }
        if let Some(p) = meta.next_append_position {
            out = out.header(format!("{prefix}next-append-position"), p.to_string());
        }
        if let (Some(h), Some(c)) = (Dialect::new(self.provider).crc64_header, crc) {
            out = out.header(h, c.to_string());
        }
        for (name, value) in &meta.metadata {
            out = out.header(format!("{prefix}meta-{name}"), value.clone());
        }
        // HEAD and an empty GET still say how long the object is.
        out.header("Content-Length", meta.size.to_string())
    }

    fn write_headers(&self, out: Outgoing, etag: &str, crc: Option<u64>) -> Outgoing {
        let mut out = out.header("ETag", format!("\"{etag}\""));
        if let (Some(h), Some(c)) = (Dialect::new(self.provider).crc64_header, crc) {
            out = out.header(h, c.to_string());
        }
        out
    }

    /// A vendor request header (`x-oss-<suffix>`); OBS also takes the
    /// `x-amz-` spelling its SDKs send when signing the AWS-V2 way.
    fn vendor_header<'r>(&self, req: &'r Incoming, suffix: &str) -> Option<&'r str> {
        let own = format!("{}{suffix}", wire::response_prefix(self.provider));
        req.header(&own).or_else(|| {
            (self.provider == Provider::Obs)
                .then(|| req.header(&format!("x-amz-{suffix}")))
                .flatten()
        })
    }

    /// Content type and user metadata of a write request. OBS SDKs send
    /// `x-amz-meta-` in AWS-V2 mode, so OBS takes both prefixes.
    fn attributes(&self, req: &Incoming) -> ObjectAttributes {
        let own = format!("{}meta-", wire::response_prefix(self.provider));
        let mut attrs = ObjectAttributes {
            content_type: req.header("content-type").map(str::to_string),
            metadata: Metadata::new(),
        };
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            let short = lower.strip_prefix(&own).or_else(|| {
                (self.provider == Provider::Obs)
                    .then(|| lower.strip_prefix("x-amz-meta-"))
                    .flatten()
            });
            if let Some(short) = short {
                attrs.metadata.insert(short.to_string(), value.clone());
            }
        }
        attrs
    }

    /// The source key of a copy: `/bucket/key`, `bucket/key` or (COS)
    /// `bucket.host/key`, percent-encoded, maybe with `?versionId=`.
    fn copy_source(&self, req: &Incoming) -> Result<String, Failure> {
        let raw = self.vendor_header(req, "copy-source").ok_or_else(|| {
            let prefix = wire::response_prefix(self.provider);
            fail(
                400,
                "InvalidArgument",
                format!("{prefix}copy-source is missing"),
            )
        })?;
        let raw = raw
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_start_matches('/');
        let (bucket, key) = raw
            .split_once('/')
            .ok_or_else(|| fail(400, "InvalidArgument", "copy source must be bucket/key"))?;
        let bucket = bucket.split('.').next().unwrap_or_default();
        if !self.buckets.contains_key(bucket) {
            return Err(fail(
                404,
                "NoSuchBucket",
                "The source bucket does not exist.",
            ));
        }
        Ok(crate::store::encode::decode(key))
    }

    fn copy_if_match(&self, req: &Incoming) -> Option<String> {
        self.vendor_header(req, "copy-source-if-match")
            .map(|v| v.trim().trim_matches('"').to_string())
    }
}

/// The `x-*-object-type` header and listing `<Type>` spelling.
fn object_type_name(kind: ObjectType) -> &'static str {
    match kind {
        ObjectType::Normal => "Normal",
        ObjectType::Appendable => "Appendable",
        ObjectType::Multipart => "Multipart",
        ObjectType::Symlink => "Symlink",
    }
}

fn copy_result(provider: Provider, root: &str, etag: &str) -> String {
    let mut inner = String::new();
    wire::element(
        &mut inner,
        "LastModified",
        &wire::iso8601(std::time::SystemTime::now()),
    );
    wire::element(&mut inner, "ETag", &format!("\"{etag}\""));
    wire::document(provider, root, &inner)
}

/// The value of query parameter `name` (`""` for a bare flag).
fn param<'a>(query: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

fn part_number(query: &[(String, Option<String>)]) -> Result<u32, Failure> {
    param(query, "partNumber")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| fail(400, "InvalidArgument", "partNumber must be a number"))
}

/// `bytes=a-b` of a copy-source range, as an end-exclusive range.
fn copy_range(header: &str) -> Result<std::ops::Range<u64>, Failure> {
    let bad = || {
        fail(
            400,
            "InvalidArgument",
            "copy source range must be bytes=first-last",
        )
    };
    let (a, b) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|s| s.split_once('-'))
        .ok_or_else(bad)?;
    let a: u64 = a.parse().map_err(|_| bad())?;
    let b: u64 = b.parse().map_err(|_| bad())?;
    if b < a {
        return Err(bad());
    }
    Ok(a..b + 1)
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        let msg = e.to_string();
        match e {
            StoreError::NoSuchKey { .. } => {
                fail(404, "NoSuchKey", "The specified key does not exist.")
            }
            StoreError::NoSuchBucket { .. } => {
                fail(404, "NoSuchBucket", "The specified bucket does not exist.")
            }
            StoreError::NoSuchUpload { .. } => {
                fail(404, "NoSuchUpload", "The specified upload does not exist.")
            }
            StoreError::PositionNotEqualToLength { next_position, .. } => {
                let mut f = fail(
                    409,
                    "PositionNotEqualToLength",
                    "Position is not equal to file length",
                );
                f.next_append_position = Some(next_position.unwrap_or_default());
                f
            }
            StoreError::ObjectNotAppendable { .. } => {
                fail(409, "ObjectNotAppendable", "The object is not appendable")
            }
            StoreError::AlreadyExists { .. } => {
                fail(409, "FileAlreadyExists", "The target already exists.")
            }
            StoreError::PreconditionFailed(_) => fail(412, "PreconditionFailed", msg),
            StoreError::InvalidRange(_) => fail(416, "InvalidRange", msg),
            StoreError::Unsupported(what) => fail(
                405,
                "MethodNotAllowed",
                format!("{what} is not supported by this bucket"),
            ),
            StoreError::InvalidRequest(m) if m.starts_with("InvalidPart") => {
                fail(400, "InvalidPart", m)
            }
            StoreError::InvalidRequest(m) => fail(400, "InvalidArgument", m),
            StoreError::Service(d) => fail(d.status, &d.code, d.message),
            StoreError::AccessDenied(_) | StoreError::BadCredentials(_) => {
                fail(403, "AccessDenied", msg)
            }
            StoreError::Timeout(_)
            | StoreError::Transport(_)
            | StoreError::InvalidResponse(_)
            | StoreError::IncompleteBody(_)
            | StoreError::Integrity(_) => fail(500, "InternalError", msg),
        }
    }
}

/// The operations the emulator tells apart: the store's operations, plus
/// the wire forms that have no [`Operation`] of their own. Counted under
/// [`Op::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A store operation; `RenameObject` covers both spellings, OSS
    /// `POST /dst?x-oss-rename` and OBS `POST /src?rename&name=dst`.
    Store(Operation),
    GetBucketInfo,
    ObsApiVersion,
    CreateDirectory,
    Unknown,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Store(op) => op.name(),
            Op::GetBucketInfo => "GetBucketInfo",
            Op::ObsApiVersion => "GetApiVersion",
            Op::CreateDirectory => "CreateDirectory",
            Op::Unknown => "Unknown",
        }
    }
}

/// Which operation a request is (for fault rules and counters).
pub fn classify(req: &Incoming) -> Op {
    let target = wire::target(&req.host, &req.path);
    operation(req, &target, &wire::query_pairs(&req.query))
}

/// Which operation a request is, from method, target and query.
fn operation(req: &Incoming, target: &Target, query: &[(String, Option<String>)]) -> Op {
    let has = |name: &str| query.iter().any(|(n, _)| n == name);
    let copy = req
        .headers
        .iter()
        .any(|(n, _)| n.to_ascii_lowercase().ends_with("-copy-source"));
    match (req.method.as_str(), target.key.is_some()) {
        ("HEAD", false) if has("apiversion") => Op::ObsApiVersion,
        ("HEAD", false) => Op::Store(Operation::HeadBucket),
        ("GET", false) if has("bucketInfo") => Op::GetBucketInfo,
        ("GET", false)
            if query
                .iter()
                .any(|(n, v)| n == "list-type" && v.as_deref() == Some("2")) =>
        {
            Op::Store(Operation::ListObjectsV2)
        }
        ("GET", false) if has("uploads") => Op::Store(Operation::ListMultipartUploads),
        ("GET", false) => Op::Store(Operation::ListObjects),
        ("POST", false) if has("delete") => Op::Store(Operation::DeleteObjects),
        ("HEAD", true) => Op::Store(Operation::HeadObject),
        ("GET", true) if has("symlink") => Op::Store(Operation::GetSymlink),
        ("GET", true) if has("uploadId") => Op::Store(Operation::ListParts),
        ("GET", true) => Op::Store(Operation::GetObject),
        ("PUT", true) if has("partNumber") && copy => Op::Store(Operation::UploadPartCopy),
        ("PUT", true) if has("partNumber") => Op::Store(Operation::UploadPart),
        ("PUT", true) if has("symlink") => Op::Store(Operation::PutSymlink),
        ("PUT", true) if has("modify") => Op::Store(Operation::ModifyObject),
        ("PUT", true) if has("truncate") => Op::Store(Operation::TruncateObject),
        ("PUT", true) if copy => Op::Store(Operation::CopyObject),
        ("PUT", true) => Op::Store(Operation::PutObject),
        ("POST", true) if has("uploads") => Op::Store(Operation::CreateMultipartUpload),
        ("POST", true) if has("uploadId") => Op::Store(Operation::CompleteMultipartUpload),
        ("POST", true) if has("append") => Op::Store(Operation::AppendObject),
        ("POST", true) if has("x-oss-rename") || has("rename") => {
            Op::Store(Operation::RenameObject)
        }
        ("POST", true) if has("x-oss-dir") => Op::CreateDirectory,
        ("DELETE", true) if has("uploadId") => Op::Store(Operation::AbortMultipartUpload),
        ("DELETE", true) => Op::Store(Operation::DeleteObject),
        _ => Op::Unknown,
    }
}
