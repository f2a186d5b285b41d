//! Object-store client layer: the [`ObjectStore`] trait the filesystem uses,
//! one implementation over HTTP ([`http::HttpStore`]) for every dialect, and
//! an in-memory one with fault hooks ([`memory::MemoryStore`]) for tests.
//!
//! Layout: `dialect` (what differs between vendors, as data), `sign` (the six
//! signature algorithms), `http` (requests, retries), `xml` (response bodies),
//! `retry` (which failures are retried and how long to wait), `types`
//! (requests and responses), `error` (the error enum).

pub mod block_buffers;
pub mod counters;
pub mod credentials;
pub mod dialect;
pub mod encode;
pub mod error;
pub mod http;
pub mod memory;
pub mod retry;
pub mod sign;
pub mod streamed;
pub mod types;
pub mod xml;

pub use dialect::{Capabilities, Dialect, Provider};
pub use error::{ServiceDetails, StoreError, StoreResult};
pub use types::*;

use async_trait::async_trait;
use bytes::Bytes;

/// The object-store operations a filesystem needs.
///
/// Operations that the dialect lacks (see [`Dialect::capabilities`]) return
/// [`StoreError::Unsupported`] without sending anything.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// What this store speaks and can do.
    fn dialect(&self) -> &Dialect;

    /// The bucket name (for messages).
    fn bucket(&self) -> &str;

    /// Requests and failures per operation so far (`bucketfs stats`); a
    /// store that does not count returns none.
    fn request_counts(&self) -> std::collections::BTreeMap<String, counters::RequestCount> {
        Default::default()
    }

    /// Checks that the bucket exists and is reachable with these credentials,
    /// and reports its type (OBS PFS, OSS hierarchical namespace).
    async fn head_bucket(&self) -> StoreResult<BucketInfo>;

    /// One page of ListObjectsV2 (or ListObjects V1 where V2 is missing).
    async fn list_objects(&self, req: &ListRequest) -> StoreResult<ListPage>;

    async fn head_object(&self, key: &str) -> StoreResult<ObjectMeta>;

    /// The object, or the range asked for. A body longer than that range
    /// (without one: longer than 16 MiB, `http::MAX_UNSIZED_BODY`) is
    /// refused as `InvalidResponse` over HTTP, whatever the server sends.
    async fn get_object(&self, req: &GetRequest) -> StoreResult<GetResponse>;

    /// [`ObjectStore::get_object`] with the body cut into `block_size`
    /// buffers, for a block cache: each block owns exactly its bytes, so
    /// caching one never keeps a whole part alive. The HTTP store fills the
    /// blocks straight from the network; this default copies.
    async fn get_object_blocks(
        &self,
        req: &GetRequest,
        block_size: usize,
    ) -> StoreResult<BlockResponse> {
        let resp = self.get_object(req).await?;
        Ok(BlockResponse {
            blocks: resp
                .body
                .chunks(block_size.max(1))
                .map(Bytes::copy_from_slice)
                .collect(),
            range: resp.range,
            total_size: resp.total_size,
            etag: resp.etag,
        })
    }

    async fn put_object(&self, req: &PutRequest) -> StoreResult<PutResponse>;

    /// AppendObject at `req.position`. A wrong position gives
    /// [`StoreError::PositionNotEqualToLength`] with the server's length; a
    /// normal object gives [`StoreError::ObjectNotAppendable`].
    async fn append_object(&self, req: &AppendRequest) -> StoreResult<AppendResponse>;

    /// Starts a multipart upload, returns its upload ID.
    async fn create_multipart_upload(
        &self,
        key: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<String>;

    async fn upload_part(&self, req: &UploadPartRequest) -> StoreResult<CompletedPart>;

    /// UploadPart with the body read from a local source while it is sent
    /// (bounded memory whatever the part's size). The default reads the
    /// part into memory and calls [`ObjectStore::upload_part`]: right for
    /// stores that hold bodies in memory anyway.
    async fn upload_part_streamed(&self, req: &StreamedPartRequest) -> StoreResult<CompletedPart> {
        let body = read_source(&*req.source, req.range.clone())
            .map_err(|e| StoreError::Transport(format!("reading the part's data: {e}")))?;
        self.upload_part(&UploadPartRequest {
            key: req.key.clone(),
            upload_id: req.upload_id.clone(),
            part_number: req.part_number,
            body,
        })
        .await
    }

    async fn upload_part_copy(&self, req: &UploadPartCopyRequest) -> StoreResult<CompletedPart>;

    async fn complete_multipart_upload(
        &self,
        req: &CompleteMultipartRequest,
    ) -> StoreResult<PutResponse>;

    async fn abort_multipart_upload(&self, key: &str, upload_id: &str) -> StoreResult<()>;

    /// One page (at most 1,000) of the open multipart uploads whose key
    /// starts with `prefix`, after the `(key, upload ID)` marker.
    async fn list_multipart_uploads(
        &self,
        prefix: &str,
        marker: Option<&(String, String)>,
    ) -> StoreResult<UploadPage>;

    async fn list_parts(&self, key: &str, upload_id: &str) -> StoreResult<Vec<PartSummary>>;

    async fn copy_object(&self, req: &CopyRequest) -> StoreResult<PutResponse>;

    /// Deletes one key; deleting a missing key succeeds (S3 semantics).
    async fn delete_object(&self, key: &str) -> StoreResult<()>;

    /// Deletes many keys, in batches of [`DELETE_BATCH_MAX`].
    async fn delete_objects(&self, keys: &[String]) -> StoreResult<DeleteObjectsResult>;

    /// Native, atomic rename (OSS hierarchical namespace, OBS PFS). A
    /// directory is named with its trailing `/`.
    async fn rename_object(&self, source_key: &str, dest_key: &str) -> StoreResult<()>;

    /// OBS PFS: overwrite bytes at `position` (may extend the object).
    async fn modify_object(&self, key: &str, position: u64, body: Bytes) -> StoreResult<()>;

    /// OBS PFS: set the object's length.
    async fn truncate_object(&self, key: &str, length: u64) -> StoreResult<()>;

    /// Native symlink object `key` pointing at `target`.
    async fn put_symlink(
        &self,
        key: &str,
        target: &str,
        attributes: &ObjectAttributes,
    ) -> StoreResult<()>;

    /// The target of a native symlink object.
    async fn get_symlink(&self, key: &str) -> StoreResult<String>;
}
