//! [`MemoryStore`]: an in-memory [`ObjectStore`] for unit tests of the layers
//! above the store (filesystem core, upload planner), with fault injection
//! and per-operation call counters.
//!
//! It owns one bucket's objects, its open multipart uploads, the call
//! counters and the fault schedule, all behind one mutex, so every operation
//! is atomic as it is on a server. It follows object-store semantics rather
//! than convenience: code that passes against it should behave the same
//! against a real server. Subtle cases:
//! 1. Every operation first counts the call and consults the fault schedule,
//!    and only then checks the dialect's capabilities. "The n-th call" is the
//!    n-th invocation of the method, whatever it would have returned, and
//!    [`MemoryStore::calls`] counts failed calls too. A listing counts as
//!    `ListObjectsV2` or `ListObjects` following `capabilities.list_v2`.
//! 2. A listing page continues after the last key or common prefix it
//!    returned. A continuation naming a common prefix skips every key under
//!    it, so a prefix never reappears on a later page. `start_after`, like
//!    S3's StartAfter, filters keys, not prefixes: keys after it still roll up
//!    into a prefix that sorts before it. Truncated pages continue with a
//!    `Token` (V2) or a `Marker` (V1 dialects), as `HttpStore` returns them;
//!    both forms are accepted. `max_keys` 0 gives an empty, final page.
//! 3. Ranged GET: the end is clipped to the size (as HTTP does), a start at or
//!    past the size is `InvalidRange` (416, also for every range on an empty
//!    object), and an empty range is refused as `HttpStore` refuses it before
//!    sending. If-Match is checked before the range, as S3 does (412 wins).
//! 4. AppendObject on a missing key needs position 0 (else
//!    `PositionNotEqualToLength` with next position 0); the request's
//!    attributes apply only when the append creates the object. PutObject
//!    over an appendable object makes it a normal one.
//! 5. CopyObject of a key onto itself must use `Replace`: S3 and COS refuse a
//!    self-copy that changes nothing. A copy is a normal object with the MD5
//!    of its content as ETag, even from an appendable or multipart source
//!    (OBS documents that a copied appendable object becomes normal, so a
//!    chmod by self-copy ends appends); a symlink copies as the symlink (OSS).
//! 6. CompleteMultipartUpload wants strictly ascending part numbers, each
//!    uploaded with the ETag given, and (when [`MemoryStore::with_min_part_size`]
//!    is set) every part but the last at least that large. Its ETag follows
//!    the S3 rule, computed by [`multipart_etag`] so that the
//!    HTTP client's completion check recognises it. Parts not listed are
//!    dropped with the upload.
//! 7. An upload ID is bound to its key: used with another key it is
//!    `NoSuchUpload`, as on S3.
//! 8. A symlink object has an empty body and the MD5 of its target as ETag.
//!    HEAD and GET do not follow it (OSS would serve the target on GET); the
//!    target is read with GetSymlink.
//! 9. CRC64 (CRC-64/XZ, what OSS and COS call ECMA) is reported only by
//!    dialects that have a CRC64 header, as `HttpStore` reports it.
//! 10. Keys `""`, `.` and `..` are refused as `HttpStore` refuses them; keys
//!     over 1024 bytes get a `KeyTooLong` service error.
//! 11. Native directory rename moves every key under the source prefix
//!     (`dir/` itself included) and fails if any key exists under the
//!     destination prefix; moved objects keep their ETag and times.
//! 12. Modify at offset may not start past the end (OBS PFS makes no holes);
//!     truncate may grow with zeros, up to the 5 TiB object limit, and an
//!     allocation it cannot make is an error rather than an abort.

use super::ObjectStore;
use super::dialect::Dialect;
use super::error::{ServiceDetails, StoreError, StoreResult, require};
use super::types::*;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::{Bound, Range};
use std::time::SystemTime;

/// Largest listing page a server returns.
const MAX_KEYS: u32 = 1000;
/// Longest key S3 accepts, in bytes.
const MAX_KEY_LEN: usize = 1024;
/// Largest object S3 stores (5 TiB).
const MAX_OBJECT_SIZE: u64 = 5 << 40;
/// Highest multipart part number.
const MAX_PART_NUMBER: u32 = 10_000;

/// Everything a [`MemoryStore`] keeps about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRecord {
    pub body: Bytes,
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
    pub metadata: Metadata,
    pub object_type: ObjectType,
    /// Set for symlink objects only.
    pub symlink_target: Option<String>,
}

/// An in-memory bucket implementing [`ObjectStore`], with fault hooks.
pub struct MemoryStore {
    dialect: Dialect,
    bucket: String,
    bucket_info: BucketInfo,
    /// Smallest size of a part that is not the last one (S3: 5 MiB); 0 turns
    /// the check off, so that tests can use small parts.
    min_part_size: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, StoredObject>,
    uploads: HashMap<String, Upload>,
    uploads_created: u64,
    calls: HashMap<Operation, u64>,
    /// Request body bytes received, per operation (data-carrying ones).
    received: HashMap<Operation, u64>,
    faults: Vec<Fault>,
    /// Keys whose object was written or removed since the last
    /// [`MemoryStore::take_changes`]; `None` when nobody asked to track.
    changed: Option<std::collections::BTreeSet<String>>,
}

#[derive(Clone)]
struct StoredObject {
    body: Bytes,
    etag: String,
    last_modified: SystemTime,
    content_type: Option<String>,
    metadata: Metadata,
    object_type: ObjectType,
    /// Set for [`ObjectType::Symlink`] objects only.
    symlink_target: Option<String>,
}

struct StoredPart {
    body: Bytes,
    etag: String,
}

struct Upload {
    key: String,
    initiated: SystemTime,
    attributes: ObjectAttributes,
    parts: BTreeMap<u32, StoredPart>,
}

/// Calls of `op` whose 1-based number (since the store was created) falls in
/// `calls` fail with `err`.
struct Fault {
    op: Operation,
    calls: Range<u64>,
    err: StoreError,
}

impl State {
    /// Counts a call of `op` and fails it if a fault is scheduled for it.
    fn enter(&mut self, op: Operation) -> StoreResult<()> {
        let counter = self.calls.entry(op).or_insert(0);
        *counter = counter.saturating_add(1);
        let call = *counter;
        // Spent faults would only slow later look-ups down.
        self.faults.retain(|f| f.op != op || f.calls.end > call);
        match self
            .faults
            .iter()
            .find(|f| f.op == op && f.calls.contains(&call))
        {
            Some(f) => Err(f.err.clone()),
            None => Ok(()),
        }
    }

    fn receive(&mut self, op: Operation, bytes: usize) {
        *self.received.entry(op).or_insert(0) += bytes as u64;
    }

    fn object(&self, key: &str) -> StoreResult<&StoredObject> {
        self.objects.get(key).ok_or_else(|| no_such_key(key))
    }

    fn object_mut(&mut self, key: &str) -> StoreResult<&mut StoredObject> {
        self.note_changed(key);
        self.objects.get_mut(key).ok_or_else(|| no_such_key(key))
    }

    fn insert_object(&mut self, key: String, obj: StoredObject) {
        self.note_changed(&key);
        self.objects.insert(key, obj);
    }

    fn remove_object(&mut self, key: &str) -> Option<StoredObject> {
        self.note_changed(key);
        self.objects.remove(key)
    }

    fn note_changed(&mut self, key: &str) {
        if let Some(changed) = &mut self.changed {
            changed.insert(key.to_string());
        }
    }
}

/// The open upload `upload_id` of `key`.
fn upload<'a>(
    uploads: &'a HashMap<String, Upload>,
    key: &str,
    upload_id: &str,
) -> StoreResult<&'a Upload> {
    uploads
        .get(upload_id)
        .filter(|u| u.key == key)
        .ok_or_else(|| StoreError::NoSuchUpload {
            upload_id: upload_id.to_string(),
        })
}

impl StoredObject {
    fn new(body: Bytes, attributes: &ObjectAttributes, object_type: ObjectType) -> StoredObject {
        StoredObject {
            etag: md5_hex(&body),
            body,
            last_modified: SystemTime::now(),
            content_type: attributes.content_type.clone(),
            metadata: attributes.metadata.clone(),
            object_type,
            symlink_target: None,
        }
    }

    fn size(&self) -> u64 {
        self.body.len() as u64
    }

    /// New content in place (append, modify, truncate): the ETag and the
    /// modification time follow, the attributes stay.
    fn set_body(&mut self, body: Bytes) {
        self.etag = md5_hex(&body);
        self.body = body;
        self.last_modified = SystemTime::now();
    }

    fn meta(&self, crc64: Option<u64>) -> ObjectMeta {
        ObjectMeta {
            size: self.size(),
            etag: self.etag.clone(),
            last_modified: Some(self.last_modified),
            content_type: self.content_type.clone(),
            metadata: self.metadata.clone(),
            object_type: self.object_type,
            crc64,
            next_append_position: (self.object_type == ObjectType::Appendable).then(|| self.size()),
        }
    }
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn no_such_key(key: &str) -> StoreError {
    StoreError::NoSuchKey {
        key: key.to_string(),
    }
}

fn service(status: u16, code: &str, message: String) -> ServiceDetails {
    ServiceDetails {
        status,
        code: code.to_string(),
        message,
        request_id: String::new(),
    }
}

fn precondition_failed(key: &str, want: &str, have: &str) -> StoreError {
    StoreError::PreconditionFailed(service(
        412,
        "PreconditionFailed",
        format!("{key:?} has ETag {have}, not {want}"),
    ))
}

fn invalid_range(key: &str, range: &Range<u64>, size: u64) -> StoreError {
    StoreError::InvalidRange(service(
        416,
        "InvalidRange",
        format!("range {range:?} of {key:?} is outside its {size} bytes"),
    ))
}

/// Whether an ETag condition holds. Callers pass ETags unquoted, but a
/// quoted or upper-case one names the same content, and `*` matches any.
fn etag_matches(want: &str, have: &str) -> bool {
    let want = want.trim().trim_matches('"');
    want == "*" || want.eq_ignore_ascii_case(have.trim_matches('"'))
}

/// Refuses keys as the HTTP client and the servers would (subtle case 10).
fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key == "." || key == ".." {
        return Err(StoreError::InvalidRequest(format!(
            "object key {key:?} cannot be addressed"
        )));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StoreError::Service(service(
            400,
            "KeyTooLong",
            format!("key of {} bytes exceeds {MAX_KEY_LEN}", key.len()),
        )));
    }
    Ok(())
}

fn check_part_number(part_number: u32) -> StoreResult<()> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(StoreError::InvalidRequest(format!(
            "InvalidArgument: part number {part_number} is outside 1..={MAX_PART_NUMBER}"
        )))
    }
}

/// `body` followed by zeros up to `length` bytes. The length comes from the
/// caller, so a size this process cannot hold is an error, not an abort.
fn zero_extended(body: &[u8], length: u64) -> StoreResult<Vec<u8>> {
    if length > MAX_OBJECT_SIZE {
        return Err(StoreError::Service(service(
            400,
            "EntityTooLarge",
            format!("{length} bytes exceeds the largest object, {MAX_OBJECT_SIZE}"),
        )));
    }
    let too_large = || {
        StoreError::Service(service(
            507,
            "InsufficientStorage",
            format!("cannot hold {length} bytes in memory"),
        ))
    };
    let length = usize::try_from(length).map_err(|_| too_large())?;
    let mut grown = Vec::new();
    grown.try_reserve_exact(length).map_err(|_| too_large())?;
    grown.extend_from_slice(body);
    grown.resize(length, 0);
    Ok(grown)
}

/// `range` as slice indices of a body of `len` bytes; `range` is already
/// known to lie within it.
fn indices(range: &Range<u64>) -> Range<usize> {
    range.start as usize..range.end as usize
}

impl MemoryStore {
    /// An empty bucket speaking `dialect`.
    pub fn new(dialect: Dialect, bucket: &str) -> MemoryStore {
        MemoryStore {
            dialect,
            bucket: bucket.to_string(),
            bucket_info: BucketInfo::default(),
            min_part_size: 0,
            state: Mutex::new(State::default()),
        }
    }

    /// Makes HeadBucket report `info` (OBS PFS, OSS hierarchical namespace)
    /// and turns on what a mount turns on after that probe
    /// ([`Dialect::with_bucket_info`]), so the store behaves as such a bucket.
    pub fn with_bucket_info(mut self, info: BucketInfo) -> MemoryStore {
        self.dialect = self.dialect.with_bucket_info(&info);
        self.bucket_info = info;
        self
    }

    /// Enforces S3's minimum size of every part but the last at
    /// CompleteMultipartUpload (`EntityTooSmall`); off by default.
    pub fn with_min_part_size(mut self, bytes: u64) -> MemoryStore {
        self.min_part_size = bytes;
        self
    }

    /// The `n`-th call of `op` from now (1-based) fails with `err` and does
    /// nothing. When faults overlap, the one scheduled first wins.
    ///
    /// # Panics
    /// If `n` is 0: there is no 0th call, and a test that asks for one is wrong.
    pub fn fail_nth(&self, op: Operation, n: u64, err: StoreError) {
        assert!(n >= 1, "fail_nth counts calls from 1");
        let mut st = self.state.lock();
        let at = st.calls.get(&op).copied().unwrap_or(0).saturating_add(n);
        st.faults.push(Fault {
            op,
            calls: at..at.saturating_add(1),
            err,
        });
    }

    /// The next `count` calls of `op` fail with `err` and do nothing.
    pub fn fail_next(&self, op: Operation, count: u64, err: StoreError) {
        let mut st = self.state.lock();
        let first = st.calls.get(&op).copied().unwrap_or(0).saturating_add(1);
        st.faults.push(Fault {
            op,
            calls: first..first.saturating_add(count),
            err,
        });
    }

    /// Request body bytes `op` received (PutObject, AppendObject,
    /// UploadPart, ModifyObject), failed calls included.
    pub fn bytes_received(&self, op: Operation) -> u64 {
        self.state.lock().received.get(&op).copied().unwrap_or(0)
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: Operation) -> u64 {
        self.state.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// Starts recording which keys change, for [`MemoryStore::take_changes`]
    /// (the emulator saves them to disk).
    pub fn track_changes(self) -> MemoryStore {
        self.state.lock().changed = Some(Default::default());
        self
    }

    /// Keys written or removed since the last call (empty when not tracking).
    pub fn take_changes(&self) -> Vec<String> {
        match &mut self.state.lock().changed {
            Some(changed) => std::mem::take(changed).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Everything stored for `key`, read without counting a call.
    pub fn export_object(&self, key: &str) -> Option<ObjectRecord> {
        self.state.lock().objects.get(key).map(|o| ObjectRecord {
            body: o.body.clone(),
            etag: o.etag.clone(),
            last_modified: o.last_modified,
            content_type: o.content_type.clone(),
            metadata: o.metadata.clone(),
            object_type: o.object_type,
            symlink_target: o.symlink_target.clone(),
        })
    }

    /// Stores `record` under `key` as it is (no call counted, no change noted):
    /// the way back from [`MemoryStore::export_object`].
    pub fn import_object(&self, key: &str, record: ObjectRecord) {
        let obj = StoredObject {
            body: record.body,
            etag: record.etag,
            last_modified: record.last_modified,
            content_type: record.content_type,
            metadata: record.metadata,
            object_type: record.object_type,
            symlink_target: record.symlink_target,
        };
        self.state.lock().objects.insert(key.to_string(), obj);
    }

    /// The content of `key`, read without counting a call.
    pub fn object_bytes(&self, key: &str) -> Option<Bytes> {
        self.state.lock().objects.get(key).map(|o| o.body.clone())
    }

    /// Every key in the bucket, in listing order.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().objects.keys().cloned().collect()
    }

    /// Open multipart uploads as (key, upload ID), sorted.
    pub fn pending_uploads(&self) -> Vec<(String, String)> {
        let st = self.state.lock();
        let mut open: Vec<_> = st
            .uploads
            .iter()
            .map(|(id, u)| (u.key.clone(), id.clone()))
            .collect();
        open.sort();
        open
    }

    fn crc64(&self, body: &[u8]) -> Option<u64> {
        self.dialect.crc64_header.map(|_| crc64(body))
    }

    fn list_operation(&self) -> Operation {
        if self.dialect.capabilities.list_v2 {
            Operation::ListObjectsV2
        } else {
            Operation::ListObjects
        }
    }
}

impl fmt::Debug for MemoryStore {
    // Bodies may be large; the shape is what a failing test needs to see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("MemoryStore");
        out.field("provider", &self.dialect.provider)
            .field("bucket", &self.bucket);
        // The lock is not reentrant: formatting the store from inside one of
        // its own operations must not deadlock.
        match self.state.try_lock() {
            Some(st) => out
                .field("objects", &st.objects.len())
                .field("uploads", &st.uploads.len())
                .field("faults", &st.faults.len()),
            None => out.field("state", &"<locked>"),
        };
        out.finish()
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn head_bucket(&self) -> StoreResult<BucketInfo> {
        self.state.lock().enter(Operation::HeadBucket)?;
        Ok(self.bucket_info.clone())
    }

    async fn list_objects(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let mut st = self.state.lock();
        st.enter(self.list_operation())?;
        let limit = req.max_keys.unwrap_or(MAX_KEYS).min(MAX_KEYS) as usize;
        let delimiter = req.delimiter.as_deref().filter(|d| !d.is_empty());
        let resume = match &req.continuation {
            Some(ListContinuation::Token(t) | ListContinuation::Marker(t)) => Some(t.as_str()),
            None => None,
        };
        let mut page = ListPage::default();
        let mut returned = 0usize;
        let mut last: Option<String> = None;
        let range = (Bound::Included(req.prefix.as_str()), Bound::Unbounded);
        for (key, obj) in st.objects.range::<str, _>(range) {
            if !key.starts_with(&req.prefix) {
                break; // keys with the prefix are contiguous
            }
            if req
                .start_after
                .as_deref()
                .is_some_and(|s| key.as_str() <= s)
            {
                continue;
            }
            let rolled_up = delimiter.and_then(|d| {
                let rest = &key[req.prefix.len()..];
                rest.find(d).map(|i| &key[..req.prefix.len() + i + d.len()])
            });
            // Entries (keys and prefixes) sort in key order, so the last one
            // returned is where the next page starts (subtle case 2).
            let name = rolled_up.unwrap_or(key.as_str());
            if resume.is_some_and(|r| name <= r) {
                continue;
            }
            if let Some(prefix) = rolled_up
                && page.common_prefixes.last().is_some_and(|p| p == prefix)
            {
                continue;
            }
            if returned == limit {
                // Something is left for another page.
                if limit > 0 {
                    page.next = last.take().map(|l| {
                        if self.dialect.capabilities.list_v2 {
                            ListContinuation::Token(l)
                        } else {
                            ListContinuation::Marker(l)
                        }
                    });
                }
                break;
            }
            match rolled_up {
                Some(prefix) => page.common_prefixes.push(prefix.to_string()),
                None => page.objects.push(ListEntry {
                    key: key.clone(),
                    size: obj.size(),
                    etag: obj.etag.clone(),
                    last_modified: Some(obj.last_modified),
                }),
            }
            returned += 1;
            last = Some(name.to_string());
        }
        Ok(page)
    }

    async fn head_object(&self, key: &str) -> StoreResult<ObjectMeta> {
        let mut st = self.state.lock();
        st.enter(Operation::HeadObject)?;
        check_key(key)?;
        let obj = st.object(key)?;
        Ok(obj.meta(self.crc64(&obj.body)))
    }

    async fn get_object(&self, req: &GetRequest) -> StoreResult<GetResponse> {
        let mut st = self.state.lock();
        st.enter(Operation::GetObject)?;
        check_key(&req.key)?;
        if let Some(r) = &req.range
            && r.start >= r.end
        {
            return Err(StoreError::InvalidRequest(format!("empty range {r:?}")));
        }
        let obj = st.object(&req.key)?;
        if let Some(want) = &req.if_match
            && !etag_matches(want, &obj.etag)
        {
            return Err(precondition_failed(&req.key, want, &obj.etag));
        }
        let size = obj.size();
        let range = match &req.range {
            None => 0..size,
            Some(r) if r.start >= size => return Err(invalid_range(&req.key, r, size)),
            Some(r) => r.start..r.end.min(size),
        };
        Ok(GetResponse {
            body: obj.body.slice(indices(&range)),
            range,
            total_size: size,
            etag: obj.etag.clone(),
        })
    }

    async fn put_object(&self, req: &PutRequest) -> StoreResult<PutResponse> {
        let mut st = self.state.lock();
        st.enter(Operation::PutObject)?;
        st.receive(Operation::PutObject, req.body.len());
        check_key(&req.key)?;
        let obj = StoredObject::new(req.body.clone(), &req.attributes, ObjectType::Normal);
        let etag = obj.etag.clone();
        st.insert_object(req.key.clone(), obj);
        Ok(PutResponse {
            etag,
            crc64: self.crc64(&req.body),
        })
    }

    async fn append_object(&self, req: &AppendRequest) -> StoreResult<AppendResponse> {
        let mut st = self.state.lock();
        st.enter(Operation::AppendObject)?;
        st.receive(Operation::AppendObject, req.body.len());
        require(self.dialect.capabilities.append, "AppendObject")?;
        check_key(&req.key)?;
        st.note_changed(&req.key);
        let Some(obj) = st.objects.get_mut(&req.key) else {
            if req.position != 0 {
                return Err(StoreError::PositionNotEqualToLength {
                    position: req.position,
                    next_position: Some(0),
                });
            }
            let obj = StoredObject::new(req.body.clone(), &req.attributes, ObjectType::Appendable);
            let response = AppendResponse {
                next_position: obj.size(),
                etag: Some(obj.etag.clone()),
                crc64: self.crc64(&obj.body),
            };
            st.insert_object(req.key.clone(), obj);
            return Ok(response);
        };
        if obj.object_type != ObjectType::Appendable {
            return Err(StoreError::ObjectNotAppendable {
                key: req.key.clone(),
            });
        }
        if obj.size() != req.position {
            return Err(StoreError::PositionNotEqualToLength {
                position: req.position,
                next_position: Some(obj.size()),
            });
        }
        let mut body = BytesMut::with_capacity(obj.body.len() + req.body.len());
        body.extend_from_slice(&obj.body);
        body.extend_from_slice(&req.body);
        obj.set_body(body.freeze());
        Ok(AppendResponse {
            next_position: obj.size(),
            etag: Some(obj.etag.clone()),
            crc64: self.crc64(&obj.body),
        })
    }

    async fn create_multipart_upload(
        &self,
        key: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<String> {
        let mut st = self.state.lock();
        st.enter(Operation::CreateMultipartUpload)?;
        check_key(key)?;
        st.uploads_created += 1;
        let upload_id = format!("memory-upload-{}", st.uploads_created);
        st.uploads.insert(
            upload_id.clone(),
            Upload {
                key: key.to_string(),
                initiated: SystemTime::now(),
                attributes: attributes.clone(),
                parts: BTreeMap::new(),
            },
        );
        Ok(upload_id)
    }

    async fn upload_part(&self, req: &UploadPartRequest) -> StoreResult<CompletedPart> {
        let mut st = self.state.lock();
        st.enter(Operation::UploadPart)?;
        st.receive(Operation::UploadPart, req.body.len());
        check_key(&req.key)?;
        check_part_number(req.part_number)?;
        upload(&st.uploads, &req.key, &req.upload_id)?;
        let etag = md5_hex(&req.body);
        let part = StoredPart {
            body: req.body.clone(),
            etag: etag.clone(),
        };
        if let Some(u) = st.uploads.get_mut(&req.upload_id) {
            // Uploading a part number again replaces it, as on S3.
            u.parts.insert(req.part_number, part);
        }
        Ok(CompletedPart {
            part_number: req.part_number,
            etag,
        })
    }

    async fn upload_part_copy(&self, req: &UploadPartCopyRequest) -> StoreResult<CompletedPart> {
        let mut st = self.state.lock();
        st.enter(Operation::UploadPartCopy)?;
        require(self.dialect.capabilities.upload_part_copy, "UploadPartCopy")?;
        check_key(&req.key)?;
        check_key(&req.source_key)?;
        check_part_number(req.part_number)?;
        if let Some(r) = &req.source_range
            && r.start >= r.end
        {
            return Err(StoreError::InvalidRequest(format!("empty range {r:?}")));
        }
        upload(&st.uploads, &req.key, &req.upload_id)?;
        let source = st.object(&req.source_key)?;
        if let Some(want) = &req.source_if_match
            && !etag_matches(want, &source.etag)
        {
            return Err(precondition_failed(&req.source_key, want, &source.etag));
        }
        let size = source.size();
        // Unlike a GET, a copy range is not clipped: it must lie in the source.
        let range = match &req.source_range {
            None => 0..size,
            Some(r) if r.end > size => return Err(invalid_range(&req.source_key, r, size)),
            Some(r) => r.clone(),
        };
        let body = source.body.slice(indices(&range));
        let etag = md5_hex(&body);
        if let Some(u) = st.uploads.get_mut(&req.upload_id) {
            u.parts.insert(
                req.part_number,
                StoredPart {
                    body,
                    etag: etag.clone(),
                },
            );
        }
        Ok(CompletedPart {
            part_number: req.part_number,
            etag,
        })
    }

    async fn complete_multipart_upload(
        &self,
        req: &CompleteMultipartRequest,
    ) -> StoreResult<PutResponse> {
        let mut st = self.state.lock();
        st.enter(Operation::CompleteMultipartUpload)?;
        check_key(&req.key)?;
        let up = upload(&st.uploads, &req.key, &req.upload_id)?;
        if req.parts.is_empty() {
            return Err(StoreError::InvalidRequest(
                "MalformedXML: a completion needs at least one part".into(),
            ));
        }
        let mut body = BytesMut::new();
        let mut used = Vec::with_capacity(req.parts.len());
        for (i, part) in req.parts.iter().enumerate() {
            if used
                .last()
                .is_some_and(|p: &CompletedPart| p.part_number >= part.part_number)
            {
                return Err(StoreError::InvalidRequest(format!(
                    "InvalidPartOrder: part {} is not after the part before it",
                    part.part_number
                )));
            }
            let stored = up
                .parts
                .get(&part.part_number)
                .filter(|s| etag_matches(&part.etag, &s.etag))
                .ok_or_else(|| {
                    StoreError::InvalidRequest(format!(
                        "InvalidPart: part {} with ETag {} was not uploaded",
                        part.part_number, part.etag
                    ))
                })?;
            let is_last = i + 1 == req.parts.len();
            if !is_last && (stored.body.len() as u64) < self.min_part_size {
                return Err(StoreError::Service(service(
                    400,
                    "EntityTooSmall",
                    format!(
                        "part {} has {} bytes, less than {}",
                        part.part_number,
                        stored.body.len(),
                        self.min_part_size
                    ),
                )));
            }
            body.extend_from_slice(&stored.body);
            used.push(CompletedPart {
                part_number: part.part_number,
                etag: stored.etag.clone(),
            });
        }
        // Our part ETags are MD5 hex, so this cannot fail; say so if it does.
        let etag = multipart_etag(&used).ok_or_else(|| {
            StoreError::Integrity("a stored part ETag is not an MD5 in hex".into())
        })?;
        let body = body.freeze();
        let mut obj = StoredObject::new(body, &up.attributes, ObjectType::Multipart);
        obj.etag = etag.clone();
        let crc64 = self.crc64(&obj.body);
        st.uploads.remove(&req.upload_id);
        st.insert_object(req.key.clone(), obj);
        Ok(PutResponse { etag, crc64 })
    }

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::AbortMultipartUpload)?;
        check_key(key)?;
        upload(&st.uploads, key, upload_id)?;
        st.uploads.remove(upload_id);
        Ok(())
    }

    async fn list_multipart_uploads(
        &self,
        prefix: &str,
        marker: Option<&(String, String)>,
    ) -> StoreResult<UploadPage> {
        const PAGE: usize = 1000;
        let mut st = self.state.lock();
        st.enter(Operation::ListMultipartUploads)?;
        let mut open: Vec<UploadSummary> = st
            .uploads
            .iter()
            .filter(|(id, u)| {
                u.key.starts_with(prefix) && marker.is_none_or(|(k, i)| (&u.key, *id) > (k, i))
            })
            .map(|(id, u)| UploadSummary {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        open.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        let next = (open.len() > PAGE).then(|| {
            open.truncate(PAGE);
            let last = &open[PAGE - 1];
            (last.key.clone(), last.upload_id.clone())
        });
        Ok(UploadPage {
            uploads: open,
            next,
        })
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<PartSummary>> {
        let mut st = self.state.lock();
        st.enter(Operation::ListParts)?;
        check_key(key)?;
        let up = upload(&st.uploads, key, upload_id)?;
        Ok(up
            .parts
            .iter()
            .map(|(&part_number, p)| PartSummary {
                part_number,
                etag: p.etag.clone(),
                size: p.body.len() as u64,
            })
            .collect())
    }

    async fn copy_object(&self, req: &CopyRequest) -> StoreResult<PutResponse> {
        let mut st = self.state.lock();
        st.enter(Operation::CopyObject)?;
        check_key(&req.source_key)?;
        check_key(&req.dest_key)?;
        let source = st.object(&req.source_key)?;
        if let Some(want) = &req.source_if_match
            && !etag_matches(want, &source.etag)
        {
            return Err(precondition_failed(&req.source_key, want, &source.etag));
        }
        if req.source_key == req.dest_key && req.directive == MetadataDirective::Copy {
            return Err(StoreError::InvalidRequest(format!(
                "copying {:?} onto itself without replacing its metadata changes nothing",
                req.source_key
            )));
        }
        let mut copy = source.clone();
        if let MetadataDirective::Replace(attrs) = &req.directive {
            copy.content_type = attrs.content_type.clone();
            copy.metadata = attrs.metadata.clone();
        }
        if copy.object_type != ObjectType::Symlink {
            copy.object_type = ObjectType::Normal;
            copy.etag = md5_hex(&copy.body);
        }
        copy.last_modified = SystemTime::now();
        let response = PutResponse {
            etag: copy.etag.clone(),
            crc64: self.crc64(&copy.body),
        };
        st.insert_object(req.dest_key.clone(), copy);
        Ok(response)
    }

    async fn delete_object(&self, key: &str) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::DeleteObject)?;
        check_key(key)?;
        st.remove_object(key);
        Ok(())
    }

    async fn delete_objects(&self, keys: &[String]) -> StoreResult<DeleteObjectsResult> {
        let mut st = self.state.lock();
        st.enter(Operation::DeleteObjects)?;
        for key in keys {
            st.remove_object(key);
        }
        // Servers report missing keys as deleted too (quiet mode off).
        Ok(DeleteObjectsResult {
            deleted: keys.to_vec(),
            errors: Vec::new(),
        })
    }

    async fn rename_object(&self, source_key: &str, dest_key: &str) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::RenameObject)?;
        let caps = self.dialect.capabilities;
        require(caps.native_rename_file, "native rename")?;
        check_key(source_key)?;
        check_key(dest_key)?;
        if !source_key.ends_with('/') {
            st.object(source_key)?;
            if st.objects.contains_key(dest_key) {
                return Err(StoreError::AlreadyExists {
                    key: dest_key.to_string(),
                });
            }
            if let Some(obj) = st.remove_object(source_key) {
                st.insert_object(dest_key.to_string(), obj);
            }
            return Ok(());
        }
        require(caps.native_rename_dir, "native directory rename")?;
        // A directory moves to a directory, and not into itself.
        if !dest_key.ends_with('/') || dest_key.starts_with(source_key) {
            return Err(StoreError::InvalidRequest(format!(
                "cannot rename directory {source_key:?} to {dest_key:?}"
            )));
        }
        let under = |prefix: &str| -> Vec<String> {
            st.objects
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let moving = under(source_key);
        if moving.is_empty() {
            return Err(no_such_key(source_key));
        }
        if !under(dest_key).is_empty() {
            return Err(StoreError::AlreadyExists {
                key: dest_key.to_string(),
            });
        }
        for key in moving {
            if let Some(obj) = st.remove_object(&key) {
                let moved = format!("{dest_key}{}", &key[source_key.len()..]);
                st.insert_object(moved, obj);
            }
        }
        Ok(())
    }

    async fn modify_object(&self, key: &str, position: u64, body: Bytes) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::ModifyObject)?;
        st.receive(Operation::ModifyObject, body.len());
        require(
            self.dialect.capabilities.modify_at_offset,
            "modify at offset",
        )?;
        check_key(key)?;
        let obj = st.object_mut(key)?;
        let size = obj.size();
        // OBS PFS writes at most at the end: a hole is not created this way.
        if position > size {
            return Err(StoreError::InvalidRequest(format!(
                "modify position {position} is past the length {size} of {key:?}"
            )));
        }
        let start = position as usize;
        let end = start + body.len();
        let mut new = BytesMut::from(&obj.body[..]);
        if end > new.len() {
            new.resize(end, 0);
        }
        new[start..end].copy_from_slice(&body);
        obj.set_body(new.freeze());
        Ok(())
    }

    async fn truncate_object(&self, key: &str, length: u64) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::TruncateObject)?;
        require(self.dialect.capabilities.truncate, "truncate")?;
        check_key(key)?;
        let obj = st.object_mut(key)?;
        let body = if length <= obj.size() {
            obj.body.slice(..length as usize)
        } else {
            Bytes::from(zero_extended(&obj.body, length)?)
        };
        obj.set_body(body);
        Ok(())
    }

    async fn put_symlink(
        &self,
        key: &str,
        target: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<()> {
        let mut st = self.state.lock();
        st.enter(Operation::PutSymlink)?;
        require(self.dialect.capabilities.symlink, "symlink")?;
        check_key(key)?;
        if target.is_empty() {
            return Err(StoreError::InvalidRequest(
                "a symlink needs a target".into(),
            ));
        }
        let mut obj = StoredObject::new(Bytes::new(), attributes, ObjectType::Symlink);
        obj.etag = md5_hex(target.as_bytes());
        obj.symlink_target = Some(target.to_string());
        st.insert_object(key.to_string(), obj);
        Ok(())
    }

    async fn get_symlink(&self, key: &str) -> StoreResult<String> {
        let mut st = self.state.lock();
        st.enter(Operation::GetSymlink)?;
        require(self.dialect.capabilities.symlink, "symlink")?;
        check_key(key)?;
        st.object(key)?.symlink_target.clone().ok_or_else(|| {
            StoreError::InvalidRequest(format!("NotSymlink: {key:?} is not a symlink"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Provider;

    fn attrs(mode: &str) -> ObjectAttributes {
        ObjectAttributes {
            content_type: Some("text/plain".into()),
            metadata: Metadata::from([("mode".to_string(), mode.to_string())]),
        }
    }

    async fn put(store: &MemoryStore, key: &str, body: &'static [u8]) -> PutResponse {
        store
            .put_object(&PutRequest {
                key: key.into(),
                body: Bytes::from_static(body),
                attributes: ObjectAttributes::default(),
            })
            .await
            .expect("put")
    }

    fn list(prefix: &str, max_keys: u32, continuation: Option<ListContinuation>) -> ListRequest {
        ListRequest {
            prefix: prefix.into(),
            delimiter: Some("/".into()),
            continuation,
            start_after: None,
            max_keys: Some(max_keys),
        }
    }

    fn keys_of(page: &ListPage) -> Vec<&str> {
        page.objects.iter().map(|o| o.key.as_str()).collect()
    }

    #[tokio::test]
    async fn listing_pages_never_repeat_a_common_prefix() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b");
        for key in ["a.txt", "d/1", "d/2", "d/sub/3", "e.txt", "f/x"] {
            put(&store, key, b"x").await;
        }

        // The first page ends on the prefix "d/", whose keys sort after it.
        let first = store.list_objects(&list("", 2, None)).await.unwrap();
        assert_eq!(keys_of(&first), ["a.txt"]);
        assert_eq!(first.common_prefixes, ["d/"]);
        assert_eq!(first.next, Some(ListContinuation::Token("d/".into())));

        let second = store.list_objects(&list("", 2, first.next)).await.unwrap();
        assert_eq!(keys_of(&second), ["e.txt"]);
        assert_eq!(second.common_prefixes, ["f/"]);
        assert_eq!(second.next, None, "nothing is left after f/");

        // A V1 marker continues the same way.
        let marker = Some(ListContinuation::Marker("d/".into()));
        let again = store.list_objects(&list("", 2, marker)).await.unwrap();
        assert_eq!(again, second);

        // Inside a prefix, with a page size of one, every entry once.
        let mut seen = Vec::new();
        let mut next = None;
        loop {
            let page = store.list_objects(&list("d/", 1, next)).await.unwrap();
            seen.extend(keys_of(&page).iter().map(|k| k.to_string()));
            seen.extend(page.common_prefixes.iter().cloned());
            next = page.next;
            if next.is_none() {
                break;
            }
        }
        assert_eq!(seen, ["d/1", "d/2", "d/sub/"]);

        // Recursive listing with start_after filters keys.
        let recursive = ListRequest {
            start_after: Some("d/2".into()),
            ..ListRequest::default()
        };
        let page = store.list_objects(&recursive).await.unwrap();
        assert_eq!(keys_of(&page), ["d/sub/3", "e.txt", "f/x"]);
        assert!(page.common_prefixes.is_empty());
        assert_eq!(store.calls(Operation::ListObjectsV2), 7);
    }

    #[tokio::test]
    async fn ranged_get_clips_the_end_and_refuses_a_start_past_it() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b");
        let written = put(&store, "k", b"0123456789").await;
        assert_eq!(written.etag, md5_hex(b"0123456789"));

        let get = async |range: Range<u64>| {
            store
                .get_object(&GetRequest {
                    key: "k".into(),
                    range: Some(range),
                    if_match: None,
                })
                .await
        };
        let mid = get(2..5).await.unwrap();
        assert_eq!(&mid.body[..], b"234");
        assert_eq!((mid.range, mid.total_size), (2..5, 10));
        assert_eq!(mid.etag, written.etag);

        let tail = get(8..20).await.unwrap();
        assert_eq!(&tail.body[..], b"89");
        assert_eq!(tail.range, 8..10);

        assert!(matches!(
            get(10..12).await,
            Err(StoreError::InvalidRange(_))
        ));
        assert!(matches!(
            get(4..4).await,
            Err(StoreError::InvalidRequest(_))
        ));

        let stale = store
            .get_object(&GetRequest {
                key: "k".into(),
                range: None,
                if_match: Some("0000".into()),
            })
            .await;
        assert!(matches!(stale, Err(StoreError::PreconditionFailed(_))));
        let quoted = store
            .get_object(&GetRequest {
                key: "k".into(),
                range: None,
                if_match: Some(format!("\"{}\"", written.etag.to_uppercase())),
            })
            .await
            .unwrap();
        assert_eq!(quoted.body.len(), 10);

        let missing = store
            .get_object(&GetRequest {
                key: "nope".into(),
                ..GetRequest::default()
            })
            .await;
        assert_eq!(missing, Err(StoreError::NoSuchKey { key: "nope".into() }));
    }

    fn append(key: &str, position: u64, body: &'static [u8]) -> AppendRequest {
        AppendRequest {
            key: key.into(),
            position,
            body: Bytes::from_static(body),
            attributes: attrs("644"),
        }
    }

    #[tokio::test]
    async fn append_positions_follow_the_server_rules() {
        let store = MemoryStore::new(Dialect::new(Provider::Oss), "b");
        let first = store
            .append_object(&append("log", 0, b"abc"))
            .await
            .unwrap();
        assert_eq!(first.next_position, 3);
        let second = store
            .append_object(&append("log", 3, b"def"))
            .await
            .unwrap();
        assert_eq!(second.next_position, 6);

        let wrong = store.append_object(&append("log", 2, b"x")).await;
        assert_eq!(
            wrong,
            Err(StoreError::PositionNotEqualToLength {
                position: 2,
                next_position: Some(6)
            })
        );
        let missing = store.append_object(&append("new", 5, b"x")).await;
        assert_eq!(
            missing,
            Err(StoreError::PositionNotEqualToLength {
                position: 5,
                next_position: Some(0)
            })
        );

        let meta = store.head_object("log").await.unwrap();
        assert_eq!(meta.object_type, ObjectType::Appendable);
        assert_eq!(meta.next_append_position, Some(6));
        assert_eq!(meta.metadata.get("mode").map(String::as_str), Some("644"));
        let mut crc = crc64fast::Digest::new();
        crc.write(b"abcdef");
        assert_eq!(meta.crc64, Some(crc.sum64()));
        assert_eq!(second.crc64, Some(crc.sum64()));

        put(&store, "plain", b"abc").await;
        let normal = store.append_object(&append("plain", 3, b"d")).await;
        assert_eq!(
            normal,
            Err(StoreError::ObjectNotAppendable {
                key: "plain".into()
            })
        );
        assert_eq!(store.object_bytes("plain").unwrap(), "abc");

        // S3 has no append: refused, and nothing is created.
        let s3 = MemoryStore::new(Dialect::new(Provider::S3), "b");
        let refused = s3.append_object(&append("log", 0, b"abc")).await;
        assert!(matches!(refused, Err(StoreError::Unsupported(_))));
        assert!(s3.keys().is_empty());
        assert_eq!(
            s3.head_object("log").await.unwrap_err().to_string(),
            "no such key \"log\""
        );
    }

    #[tokio::test]
    async fn multipart_with_a_copied_part_assembles_and_closes_the_upload() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b");
        put(&store, "src", b"hello world").await;
        let id = store
            .create_multipart_upload("dst", &attrs("600"))
            .await
            .unwrap();
        let copied = store
            .upload_part_copy(&UploadPartCopyRequest {
                key: "dst".into(),
                upload_id: id.clone(),
                part_number: 2,
                source_key: "src".into(),
                source_range: Some(6..11),
                source_if_match: None,
            })
            .await
            .unwrap();
        assert_eq!(copied.etag, md5_hex(b"world"));
        let uploaded = store
            .upload_part(&UploadPartRequest {
                key: "dst".into(),
                upload_id: id.clone(),
                part_number: 1,
                body: Bytes::from_static(b"abc-"),
            })
            .await
            .unwrap();

        let parts = store.list_parts("dst", &id).await.unwrap();
        let numbers: Vec<u32> = parts.iter().map(|p| p.part_number).collect();
        assert_eq!(numbers, [1, 2]);
        assert_eq!(parts[1].size, 5);

        // A copy range past the source is refused, not clipped.
        let past = store
            .upload_part_copy(&UploadPartCopyRequest {
                key: "dst".into(),
                upload_id: id.clone(),
                part_number: 3,
                source_key: "src".into(),
                source_range: Some(6..12),
                source_if_match: None,
            })
            .await;
        assert!(matches!(past, Err(StoreError::InvalidRange(_))));

        let complete = async |parts: Vec<CompletedPart>| {
            store
                .complete_multipart_upload(&CompleteMultipartRequest {
                    key: "dst".into(),
                    upload_id: id.clone(),
                    parts,
                })
                .await
        };
        let bad_etag = CompletedPart {
            part_number: 2,
            etag: md5_hex(b"other"),
        };
        let err = complete(vec![uploaded.clone(), bad_etag])
            .await
            .unwrap_err();
        assert!(matches!(&err, StoreError::InvalidRequest(m) if m.starts_with("InvalidPart:")));
        let err = complete(vec![copied.clone(), uploaded.clone()])
            .await
            .unwrap_err();
        assert!(matches!(&err, StoreError::InvalidRequest(m) if m.starts_with("InvalidPartOrder")));

        let done = complete(vec![uploaded.clone(), copied.clone()])
            .await
            .unwrap();
        // S3 rule, computed here independently: MD5 of the binary part MD5s.
        let mut rule = Md5::new();
        rule.update(Md5::digest(b"abc-"));
        rule.update(Md5::digest(b"world"));
        assert_eq!(done.etag, format!("{}-2", hex::encode(rule.finalize())));
        assert_eq!(store.object_bytes("dst").unwrap(), "abc-world");
        let meta = store.head_object("dst").await.unwrap();
        assert_eq!(meta.object_type, ObjectType::Multipart);
        assert_eq!(meta.metadata.get("mode").map(String::as_str), Some("600"));

        assert!(store.pending_uploads().is_empty());
        assert_eq!(
            store.list_parts("dst", &id).await,
            Err(StoreError::NoSuchUpload { upload_id: id })
        );
    }

    #[tokio::test]
    async fn multipart_enforces_the_minimum_part_size_when_asked() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b").with_min_part_size(4);
        let id = store
            .create_multipart_upload("k", &ObjectAttributes::default())
            .await
            .unwrap();
        let mut parts = Vec::new();
        for (n, body) in [(1, &b"abc"[..]), (2, &b"defg"[..])] {
            let part = store
                .upload_part(&UploadPartRequest {
                    key: "k".into(),
                    upload_id: id.clone(),
                    part_number: n,
                    body: Bytes::copy_from_slice(body),
                })
                .await
                .unwrap();
            parts.push(part);
        }
        let req = CompleteMultipartRequest {
            key: "k".into(),
            upload_id: id.clone(),
            parts: parts.clone(),
        };
        let err = store.complete_multipart_upload(&req).await.unwrap_err();
        assert!(matches!(&err, StoreError::Service(d) if d.code == "EntityTooSmall"));
        // A short last part is fine.
        let last_only = CompleteMultipartRequest {
            parts: parts[..1].to_vec(),
            ..req
        };
        store.complete_multipart_upload(&last_only).await.unwrap();
        assert_eq!(store.object_bytes("k").unwrap(), "abc");
        // The upload is bound to its key.
        let other = store.abort_multipart_upload("other", &id).await;
        assert!(matches!(other, Err(StoreError::NoSuchUpload { .. })));
    }

    #[tokio::test]
    async fn copy_onto_itself_replaces_metadata_only_with_replace() {
        let store = MemoryStore::new(Dialect::new(Provider::Cos), "b");
        let put = store
            .put_object(&PutRequest {
                key: "f".into(),
                body: Bytes::from_static(b"data"),
                attributes: attrs("644"),
            })
            .await
            .unwrap();
        let copy = async |dest: &str, directive: MetadataDirective, if_match: Option<&str>| {
            store
                .copy_object(&CopyRequest {
                    source_key: "f".into(),
                    dest_key: dest.into(),
                    directive,
                    source_if_match: if_match.map(str::to_string),
                })
                .await
        };

        let noop = copy("f", MetadataDirective::Copy, None).await;
        assert!(matches!(noop, Err(StoreError::InvalidRequest(_))));

        let chmod = copy(
            "f",
            MetadataDirective::Replace(attrs("755")),
            Some(&put.etag),
        )
        .await
        .unwrap();
        assert_eq!(chmod.etag, put.etag, "same content, same ETag");
        let meta = store.head_object("f").await.unwrap();
        assert_eq!(meta.metadata.get("mode").map(String::as_str), Some("755"));
        assert_eq!(store.object_bytes("f").unwrap(), "data");

        let kept = copy("g", MetadataDirective::Copy, None).await.unwrap();
        assert_eq!(kept.etag, put.etag);
        let g = store.head_object("g").await.unwrap();
        assert_eq!(g.metadata, meta.metadata);
        assert_eq!(g.content_type.as_deref(), Some("text/plain"));

        let stale = copy("h", MetadataDirective::Copy, Some("0123")).await;
        assert!(matches!(stale, Err(StoreError::PreconditionFailed(_))));
        assert!(store.object_bytes("h").is_none());
    }

    #[tokio::test]
    async fn directory_rename_needs_the_capability_and_moves_everything_under_it() {
        let pfs = BucketInfo {
            obs_pfs: true,
            ..BucketInfo::default()
        };
        let store =
            MemoryStore::new(Dialect::new(Provider::Obs), "b").with_bucket_info(pfs.clone());
        assert_eq!(store.head_bucket().await.unwrap(), pfs);
        for key in ["d/", "d/x", "d/sub/y", "d.txt", "e"] {
            put(&store, key, b"1").await;
        }
        store.rename_object("d/", "n/").await.unwrap();
        assert_eq!(store.keys(), ["d.txt", "e", "n/", "n/sub/y", "n/x"]);

        assert_eq!(
            store.rename_object("d/", "m/").await,
            Err(StoreError::NoSuchKey { key: "d/".into() })
        );
        assert_eq!(
            store.rename_object("d.txt", "e").await,
            Err(StoreError::AlreadyExists { key: "e".into() })
        );
        let into_itself = store.rename_object("n/", "n/sub/deeper/").await;
        assert!(matches!(into_itself, Err(StoreError::InvalidRequest(_))));
        store.rename_object("d.txt", "f").await.unwrap();
        assert_eq!(store.object_bytes("f").unwrap(), "1");
        assert!(store.object_bytes("d.txt").is_none());

        let plain = MemoryStore::new(Dialect::new(Provider::Obs), "b");
        put(&plain, "d/x", b"1").await;
        let refused = plain.rename_object("d/", "n/").await;
        assert!(matches!(refused, Err(StoreError::Unsupported(_))));
        assert_eq!(plain.keys(), ["d/x"]);
        assert_eq!(plain.calls(Operation::RenameObject), 1);
    }

    #[tokio::test]
    async fn pfs_modify_truncate_and_symlinks() {
        let pfs = BucketInfo {
            obs_pfs: true,
            ..BucketInfo::default()
        };
        let store = MemoryStore::new(Dialect::new(Provider::Obs), "b").with_bucket_info(pfs);
        put(&store, "f", b"abcdef").await;
        store
            .modify_object("f", 4, Bytes::from_static(b"XYZ"))
            .await
            .unwrap();
        assert_eq!(store.object_bytes("f").unwrap(), "abcdXYZ");
        let hole = store.modify_object("f", 9, Bytes::from_static(b"!")).await;
        assert!(matches!(hole, Err(StoreError::InvalidRequest(_))));
        store.truncate_object("f", 2).await.unwrap();
        assert_eq!(store.object_bytes("f").unwrap(), "ab");
        store.truncate_object("f", 4).await.unwrap();
        assert_eq!(store.object_bytes("f").unwrap(), &b"ab\0\0"[..]);
        let huge = store.truncate_object("f", u64::MAX).await.unwrap_err();
        assert!(matches!(&huge, StoreError::Service(d) if d.code == "EntityTooLarge"));
        assert_eq!(
            store.head_object("f").await.unwrap().etag,
            md5_hex(b"ab\0\0")
        );
        // OBS has no symlinks.
        let refused = store
            .put_symlink("l", "f", &ObjectAttributes::default())
            .await;
        assert!(matches!(refused, Err(StoreError::Unsupported(_))));

        let oss = MemoryStore::new(Dialect::new(Provider::Oss), "b");
        oss.put_symlink("l", "dir/target", &attrs("777"))
            .await
            .unwrap();
        assert_eq!(oss.get_symlink("l").await.unwrap(), "dir/target");
        assert_eq!(
            oss.head_object("l").await.unwrap().object_type,
            ObjectType::Symlink
        );
        put(&oss, "plain", b"x").await;
        assert!(matches!(
            oss.get_symlink("plain").await,
            Err(StoreError::InvalidRequest(_))
        ));
        assert!(matches!(
            oss.get_symlink("none").await,
            Err(StoreError::NoSuchKey { .. })
        ));
        let truncate = oss.truncate_object("plain", 0).await;
        assert!(matches!(truncate, Err(StoreError::Unsupported(_))));
        assert_eq!(oss.object_bytes("plain").unwrap(), "x");
    }

    #[tokio::test]
    async fn deletes_succeed_for_missing_keys() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b");
        put(&store, "a", b"1").await;
        store.delete_object("missing").await.unwrap();
        let keys = vec!["a".to_string(), "missing".to_string()];
        let result = store.delete_objects(&keys).await.unwrap();
        assert_eq!(result.deleted, keys);
        assert!(result.errors.is_empty());
        assert!(store.keys().is_empty());
    }

    #[tokio::test]
    async fn faults_hit_the_chosen_calls_only_and_every_call_is_counted() {
        let store = MemoryStore::new(Dialect::new(Provider::S3), "b");
        put(&store, "k", b"v").await;
        let timeout = StoreError::Timeout("injected".into());
        store.fail_nth(Operation::GetObject, 2, timeout.clone());
        let get = async || {
            store
                .get_object(&GetRequest {
                    key: "k".into(),
                    ..GetRequest::default()
                })
                .await
        };
        assert!(get().await.is_ok());
        assert_eq!(get().await, Err(timeout.clone()));
        assert!(get().await.is_ok());
        assert_eq!(store.calls(Operation::GetObject), 3);

        // Failed puts change nothing; the third call goes through.
        let slow = StoreError::Service(service(503, "SlowDown", "injected".into()));
        store.fail_next(Operation::PutObject, 2, slow.clone());
        let req = PutRequest {
            key: "n".into(),
            body: Bytes::from_static(b"new"),
            attributes: ObjectAttributes::default(),
        };
        assert_eq!(store.put_object(&req).await, Err(slow.clone()));
        assert_eq!(store.put_object(&req).await, Err(slow));
        assert!(store.object_bytes("n").is_none());
        store.put_object(&req).await.unwrap();
        assert_eq!(store.object_bytes("n").unwrap(), "new");
        // One put seeded "k", two failed, one landed.
        assert_eq!(store.calls(Operation::PutObject), 4);
        assert_eq!(store.calls(Operation::HeadObject), 0);
        // Faults count from when they are scheduled, and other operations
        // are untouched.
        store.fail_nth(Operation::GetObject, 1, timeout.clone());
        assert!(store.head_object("k").await.is_ok());
        assert_eq!(get().await, Err(timeout));
        assert!(get().await.is_ok());
    }
}
