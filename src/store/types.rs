//! Typed requests and responses of the [`super::ObjectStore`] operations.
//!
//! Keys are full object keys inside the bucket (the filesystem layer adds its
//! mount prefix). ETags are stored without the surrounding quotes. User
//! metadata names are lower-case and carry no dialect prefix
//! (`x-oss-meta-mode` is `mode`); the dialect adds and strips the prefix.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

/// User metadata, name (lower-case, no prefix) to value.
pub type Metadata = BTreeMap<String, String>;

/// Most keys a single DeleteObjects request may carry (S3/OSS/OBS/COS limit).
pub const DELETE_BATCH_MAX: usize = 1000;

/// Kind of object, from `x-*-object-type` where the dialect returns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ObjectType {
    #[default]
    Normal,
    /// Created by AppendObject; further appends are allowed.
    Appendable,
    /// Completed from a multipart upload.
    Multipart,
    /// OSS native symlink.
    Symlink,
}

impl ObjectType {
    /// Parses an `x-*-object-type` header value (case-insensitive).
    pub fn parse(s: &str) -> ObjectType {
        match s.to_ascii_lowercase().as_str() {
            "appendable" => ObjectType::Appendable,
            "multipart" => ObjectType::Multipart,
            "symlink" => ObjectType::Symlink,
            _ => ObjectType::Normal,
        }
    }
}

/// Attributes of one object, from HeadObject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
    pub content_type: Option<String>,
    pub metadata: Metadata,
    pub object_type: ObjectType,
    /// CRC-64/ECMA-182 of the content where the dialect returns it.
    pub crc64: Option<u64>,
    /// Where the next AppendObject must start (appendable objects).
    pub next_append_position: Option<u64>,
}

/// Where a listing continues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListContinuation {
    /// ListObjectsV2 `continuation-token`.
    Token(String),
    /// ListObjects V1 `marker` (used after falling back from V2).
    Marker(String),
}

/// One ListObjects(V2) request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListRequest {
    pub prefix: String,
    /// Usually `/`; `None` lists recursively.
    pub delimiter: Option<String>,
    pub continuation: Option<ListContinuation>,
    pub start_after: Option<String>,
    /// Page size; the server caps it at 1000.
    pub max_keys: Option<u32>,
}

/// One object of a listing page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

/// One page of a listing, keys already URL-decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ListEntry>,
    /// Common prefixes (sub-"directories"), each ending with the delimiter.
    pub common_prefixes: Vec<String>,
    /// Present when the listing is truncated.
    pub next: Option<ListContinuation>,
    /// Keys and prefixes whose `encoding-type=url` form decodes to bytes
    /// that are not UTF-8, as sent (left out of `objects` and
    /// `common_prefixes`: no path can name them).
    pub undecodable: Vec<String>,
}

/// A ranged (or whole) GetObject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetRequest {
    pub key: String,
    /// Byte range, end exclusive; `None` reads the whole object.
    pub range: Option<Range<u64>>,
    /// Fail with [`super::StoreError::PreconditionFailed`] unless the ETag matches.
    pub if_match: Option<String>,
}

/// The body of a GetObject, checked against Content-Length/Content-Range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetResponse {
    pub body: Bytes,
    /// The range actually returned (end exclusive).
    pub range: Range<u64>,
    /// Size of the whole object.
    pub total_size: u64,
    pub etag: String,
}

/// A ranged GetObject delivered as consecutive blocks, each in its own
/// buffer (see [`super::ObjectStore::get_object_blocks`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockResponse {
    /// The body in order; every block but the last has the asked size.
    pub blocks: Vec<Bytes>,
    /// The range actually returned (end exclusive).
    pub range: Range<u64>,
    /// Size of the whole object.
    pub total_size: u64,
    pub etag: String,
}

/// PutObject, CreateMultipartUpload and the first AppendObject take these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectAttributes {
    pub content_type: Option<String>,
    pub metadata: Metadata,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: String,
    pub body: Bytes,
    pub attributes: ObjectAttributes,
}

/// What the server says about a written object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub etag: String,
    pub crc64: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendRequest {
    pub key: String,
    /// Must equal the object's current length (0 creates the object).
    pub position: u64,
    pub body: Bytes,
    /// Applied when `position == 0` (the append creates the object).
    pub attributes: ObjectAttributes,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendResponse {
    pub next_position: u64,
    /// The object's ETag after the append, where the server returns one
    /// (OSS does, 8.1.4 "AppendObject", response examples): then no HEAD
    /// is needed to learn it.
    pub etag: Option<String>,
    /// CRC64 of the whole object after the append, where returned.
    pub crc64: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPartRequest {
    pub key: String,
    pub upload_id: String,
    /// 1..=10000.
    pub part_number: u32,
    pub body: Bytes,
}

/// Where the bytes of a streamed upload come from: a local file (a staged
/// file, see `fs::write`) read at offsets when the request is sent, as
/// often as a retry needs, so a part is never held whole in memory.
pub trait PartSource: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with the bytes at `offset` (zeros past the source's end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

/// UploadPart with the body read from `source` in bounded chunks
/// ([`STREAM_CHUNK`]) while it is sent.
#[derive(Clone, Debug)]
pub struct StreamedPartRequest {
    pub key: String,
    pub upload_id: String,
    /// 1..=10000.
    pub part_number: u32,
    pub source: std::sync::Arc<dyn PartSource>,
    /// The bytes of `source` that make the part.
    pub range: Range<u64>,
}

/// Bytes read from a [`PartSource`] at a time: what a streamed part holds
/// in memory per request (plus the transport's own buffers).
pub const STREAM_CHUNK: usize = 1 << 20;

/// Reads `range` of `source` into one buffer (for stores that keep bodies
/// in memory anyway, such as [`super::memory::MemoryStore`]).
pub fn read_source(source: &dyn PartSource, range: Range<u64>) -> std::io::Result<Bytes> {
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    let mut buf = vec![0u8; len];
    source.read_at(&mut buf, range.start)?;
    Ok(Bytes::from(buf))
}

/// The digests of a streamed body, from one pass over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceDigests {
    /// Base64 MD5 (`Content-MD5`).
    pub md5_base64: String,
    /// Hex SHA-256, when asked for (SigV4's payload hash).
    pub sha256_hex: Option<String>,
    pub crc64: u64,
}

/// Reads `range` of `source` in [`STREAM_CHUNK`] pieces and digests it.
pub fn digest_source(
    source: &dyn PartSource,
    range: Range<u64>,
    with_sha256: bool,
) -> std::io::Result<SourceDigests> {
    use base64::Engine;
    use md5::Digest as _;
    let mut md5 = md5::Md5::new();
    let mut sha = with_sha256.then(sha2::Sha256::new);
    let mut crc = crc64fast::Digest::new();
    let mut buf = vec![0u8; STREAM_CHUNK];
    let mut at = range.start;
    while at < range.end {
        let n = (range.end - at).min(STREAM_CHUNK as u64) as usize;
        source.read_at(&mut buf[..n], at)?;
        md5.update(&buf[..n]);
        if let Some(sha) = &mut sha {
            sha.update(&buf[..n]);
        }
        crc.write(&buf[..n]);
        at += n as u64;
    }
    Ok(SourceDigests {
        md5_base64: base64::engine::general_purpose::STANDARD.encode(md5.finalize()),
        sha256_hex: sha.map(|s| hex::encode(s.finalize())),
        crc64: crc.sum64(),
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadPartCopyRequest {
    pub key: String,
    pub upload_id: String,
    pub part_number: u32,
    pub source_key: String,
    /// Byte range of the source, end exclusive; `None` copies it whole.
    pub source_range: Option<Range<u64>>,
    /// Copy only if the source still has this ETag.
    pub source_if_match: Option<String>,
}

/// A part as CompleteMultipartUpload needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
}

/// The ETag S3-compatible servers give a completed multipart upload:
/// MD5 of the concatenated binary part MD5s, then `-<part count>`.
pub fn multipart_etag(parts: &[CompletedPart]) -> Option<String> {
    use md5::Digest;
    let mut hasher = md5::Md5::new();
    for p in parts {
        hasher.update(hex::decode(&p.etag).ok()?);
    }
    Some(format!(
        "{}-{}",
        hex::encode(hasher.finalize()),
        parts.len()
    ))
}

/// CRC-64/XZ of `data`, the checksum OSS and COS call `crc64ecma`.
pub fn crc64(data: &[u8]) -> u64 {
    let mut digest = crc64fast::Digest::new();
    digest.write(data);
    digest.sum64()
}

/// A part as ListParts reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartSummary {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

/// An open multipart upload as ListMultipartUploads reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadSummary {
    pub key: String,
    pub upload_id: String,
    /// When it was initiated, by the server's clock.
    pub initiated: Option<SystemTime>,
}

/// One page of ListMultipartUploads and, when truncated, the (key, upload
/// ID) markers to go on from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadPage {
    pub uploads: Vec<UploadSummary>,
    pub next: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompleteMultipartRequest {
    pub key: String,
    pub upload_id: String,
    /// In ascending part-number order.
    pub parts: Vec<CompletedPart>,
}

/// What CopyObject does with the metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataDirective {
    /// Keep the source's metadata.
    Copy,
    /// Replace it (how chmod/utimens rewrite an existing object's metadata).
    Replace(ObjectAttributes),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyRequest {
    pub source_key: String,
    pub dest_key: String,
    pub directive: MetadataDirective,
    pub source_if_match: Option<String>,
}

/// Result of a batch delete: keys deleted and per-key failures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteObjectsResult {
    pub deleted: Vec<String>,
    pub errors: Vec<DeleteError>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteError {
    pub key: String,
    pub code: String,
    pub message: String,
}

/// What HeadBucket (or the dialect's bucket probe) found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketInfo {
    pub region: Option<String>,
    /// OBS parallel file system (`x-obs-fs-file-interface: Enabled`).
    pub obs_pfs: bool,
    /// OSS hierarchical namespace (`<HierarchicalNamespace>Enabled`).
    pub oss_hierarchical_namespace: bool,
}

/// The operations of [`super::ObjectStore`], for fault injection, retry
/// decisions and request counters. Names match the vendor API names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    HeadBucket,
    ListObjectsV2,
    ListObjects,
    HeadObject,
    GetObject,
    PutObject,
    AppendObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    ListMultipartUploads,
    CopyObject,
    DeleteObject,
    DeleteObjects,
    RenameObject,
    ModifyObject,
    TruncateObject,
    PutSymlink,
    GetSymlink,
}

impl Operation {
    /// Whether sending the request twice has the same effect as once. The
    /// others (append, complete, modify at offset, rename) are retried only
    /// after checking what the server already has.
    pub fn is_idempotent(self) -> bool {
        !matches!(
            self,
            Operation::AppendObject
                | Operation::CompleteMultipartUpload
                | Operation::ModifyObject
                | Operation::RenameObject
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::HeadBucket => "HeadBucket",
            Operation::ListObjectsV2 => "ListObjectsV2",
            Operation::ListObjects => "ListObjects",
            Operation::HeadObject => "HeadObject",
            Operation::GetObject => "GetObject",
            Operation::PutObject => "PutObject",
            Operation::AppendObject => "AppendObject",
            Operation::CreateMultipartUpload => "CreateMultipartUpload",
            Operation::UploadPart => "UploadPart",
            Operation::UploadPartCopy => "UploadPartCopy",
            Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload => "AbortMultipartUpload",
            Operation::ListParts => "ListParts",
            Operation::ListMultipartUploads => "ListMultipartUploads",
            Operation::CopyObject => "CopyObject",
            Operation::DeleteObject => "DeleteObject",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::RenameObject => "RenameObject",
            Operation::ModifyObject => "ModifyObject",
            Operation::TruncateObject => "TruncateObject",
            Operation::PutSymlink => "PutSymlink",
            Operation::GetSymlink => "GetSymlink",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_etag_matches_the_s3_rule() {
        // md5("a") and md5("b") as part ETags.
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
        // Known answer: md5(md5("a") ++ md5("b")) computed independently.
        assert_eq!(
            multipart_etag(&parts).unwrap(),
            "96e024ba2074fe77e8e965ba43a704be-2"
        );
        assert_eq!(
            multipart_etag(&[CompletedPart {
                part_number: 1,
                etag: "zz".into()
            }]),
            None
        );
    }
}
