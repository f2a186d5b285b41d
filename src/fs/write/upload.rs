//! [`Uploader`]: carries out the plan (`plan.rs`) for one snapshot of a
//! dirty file and reports the object it made.
//!
//! Subtle cases:
//! 1. **Bytes come from the snapshot's map.** Dirty ranges of the snapshot
//!    are read from the staging file, unchanged ones from the base object
//!    with `If-Match` on its ETag, so a base replaced by another client
//!    fails the upload (PreconditionFailed) instead of mixing versions.
//!    Staged bytes rewritten after the snapshot may be read newer than the
//!    snapshot; they are dirty again after it (dirty.rs, subtle case 1), so
//!    the next upload makes the object right.
//! 2. **Bounded memory.** Data is read per part or per request, never the
//!    whole file: a PutObject, append or modify piece is at most
//!    `part_size`, and at most `parts_in_flight` bodies (puts, appends,
//!    modifies and parts alike) are held at once, mount-wide. Parts grow past `part_size` only for files of more than
//!    10,000 parts (plan.rs, subtle case 2; stream.rs, subtle case 2);
//!    those are streamed from the staging file a chunk at a time
//!    (store/streamed.rs), after the base bytes they need are copied into
//!    it, `part_size` at a time ([`DirtyFile::keep_base_bytes`]). So upload
//!    memory is at most `parts_in_flight` x `part_size`, whatever the
//!    file's size.
//! 3. **Multipart bookkeeping.** A started multipart upload is written to
//!    the journal before its first part, and its end after it is completed
//!    or aborted, so a daemon that dies in between aborts it at recovery
//!    instead of leaving billed parts behind.
//! 4. **After an append, modify or metadata copy** the response carries no
//!    reliable ETag, so the object is HEADed: the ETag pins later reads,
//!    the size checks the result, the type says whether it still appends.
//! 5. **Verification.** PutObject, UploadPart, AppendObject and modify
//!    send Content-MD5, and the CRC64 of puts and parts is checked where the
//!    dialect returns it (store/http.rs); the final size is checked here.

use crate::fs::write::dirty::{DirtyFile, Snapshot};
use crate::fs::write::meta::to_metadata;
use crate::fs::write::plan::{Part, Plan, PlanLimits, plan};
use crate::fs::write::stream::{Stream, StreamPart};
use crate::staging::StagingArea;
use crate::staging::journal::{BaseObject, Record};
use crate::store::{
    AppendRequest, CompleteMultipartRequest, CompletedPart, CopyRequest, GetRequest,
    MetadataDirective, ObjectAttributes, ObjectStore, PutRequest, StoreError, StoreResult,
    StreamedPartRequest, UploadPartCopyRequest, UploadPartRequest,
};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Carries out uploads. One per mount, shared by all upload tasks.
#[derive(Debug)]
pub struct Uploader {
    store: Arc<dyn ObjectStore>,
    staging: Arc<StagingArea>,
    limits: PlanLimits,
    parts: Arc<Semaphore>,
}

impl Uploader {
    /// An uploader with `part_size` parts and at most `parts_in_flight`
    /// part-sized requests at once (subtle case 2).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        staging: Arc<StagingArea>,
        part_size: u64,
        parts_in_flight: usize,
    ) -> Uploader {
        let caps = store.dialect().capabilities;
        Uploader {
            limits: PlanLimits {
                append: caps.append,
                modify_at_offset: caps.modify_at_offset,
                upload_part_copy: caps.upload_part_copy,
                part_size,
                put_max: part_size,
                append_create_max: part_size,
                copy_min: part_size,
            },
            parts: Arc::new(Semaphore::new(parts_in_flight.max(1))),
            store,
            staging,
        }
    }

    pub fn limits(&self) -> &PlanLimits {
        &self.limits
    }

    /// One of the `parts_in_flight` slots for a request body (subtle case
    /// 2). Every body read into memory holds one, whichever file it is
    /// for: a thousand small files closed at once upload `parts_in_flight`
    /// at a time, not a thousand bodies at once. A multipart upload takes
    /// them per part, never one for the whole upload and more inside it.
    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.parts
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }

    /// Makes the object equal `snap` and returns it as the new base.
    pub async fn upload(&self, file: &Arc<DirtyFile>, snap: &Snapshot) -> StoreResult<BaseObject> {
        if let Some(done) = self.finish_stream(file, snap).await {
            return done;
        }
        let the_plan = plan(&snap.plan, &self.limits);
        tracing::debug!(key = %snap.key, generation = snap.generation, plan = ?the_plan, "upload");
        let attributes = ObjectAttributes {
            content_type: None,
            metadata: to_metadata(&snap.meta),
        };
        let size = snap.plan.size;
        match the_plan {
            Plan::Nothing => Ok(snap
                .plan
                .base
                .clone()
                .expect("only a file with a base can be unchanged")),
            Plan::Metadata => {
                let base = snap.plan.base.as_ref().expect("metadata plans have a base");
                self.store
                    .copy_object(&CopyRequest {
                        source_key: snap.key.clone(),
                        dest_key: snap.key.clone(),
                        directive: MetadataDirective::Replace(attributes),
                        source_if_match: Some(base.etag.clone()),
                    })
                    .await?;
                self.head(&snap.key, size).await
            }
            Plan::Put => {
                let _permit = self.permit().await;
                let body = self.content(file, snap, 0..size).await?;
                let put = self
                    .store
                    .put_object(&PutRequest {
                        key: snap.key.clone(),
                        body,
                        attributes,
                    })
                    .await?;
                Ok(BaseObject {
                    etag: put.etag,
                    size,
                    appendable: false,
                })
            }
            Plan::Append(range) => match self.append(file, snap, range, attributes).await? {
                Some(etag) => Ok(BaseObject {
                    etag,
                    size,
                    appendable: true,
                }),
                None => self.head(&snap.key, size).await,
            },
            Plan::Multipart(parts) => self.multipart(file, snap, parts, attributes).await,
            Plan::Modify { truncate, writes } => {
                if let Some(length) = truncate {
                    self.store.truncate_object(&snap.key, length).await?;
                }
                for w in writes {
                    for piece in pieces(w, self.limits.part_size) {
                        let _permit = self.permit().await;
                        let body = self.content(file, snap, piece.clone()).await?;
                        self.store
                            .modify_object(&snap.key, piece.start, body)
                            .await?;
                    }
                }
                if truncate.is_none() && size < snap.plan.base.as_ref().map_or(0, |b| b.size) {
                    self.store.truncate_object(&snap.key, size).await?;
                }
                self.head(&snap.key, size).await
            }
        }
    }

    /// Uploads one streamed part (stream.rs); the first creates the
    /// multipart upload. The outcome is recorded in the file's stream.
    pub async fn upload_stream_part(
        &self,
        file: &Arc<DirtyFile>,
        part: StreamPart,
        upload_id: Arc<tokio::sync::OnceCell<String>>,
    ) {
        let mut part = part;
        loop {
            let result = self.stream_part(file, &part, &upload_id).await;
            if let Err(e) = &result {
                tracing::warn!(key = %file.key(), part = part.number, "streamed part failed; the file will be uploaded whole at close: {e}");
            }
            file.with_stream(|s| s.part_ended(result.map_err(|_| ())));
            // Keep the pipeline busy without waiting for the next write.
            match file.next_stream_part(self.limits.part_size) {
                Some((next, _)) => part = next,
                None => return,
            }
        }
    }

    async fn stream_part(
        &self,
        file: &Arc<DirtyFile>,
        part: &StreamPart,
        upload_id: &tokio::sync::OnceCell<String>,
    ) -> StoreResult<CompletedPart> {
        let _permit = self.permit().await;
        let (key, meta) = file
            .with_stream(|s| (s.key.clone(), s.meta.clone()))
            .ok_or_else(|| StoreError::Transport("stream gone".into()))?;
        let id = upload_id
            .get_or_try_init(|| async {
                let attributes = ObjectAttributes {
                    content_type: None,
                    metadata: to_metadata(&meta),
                };
                let id = self
                    .store
                    .create_multipart_upload(&key, &attributes)
                    .await?;
                let _ = self.staging.record(&Record::MultipartStarted {
                    key: key.clone(),
                    upload_id: id.clone(),
                });
                Ok::<_, StoreError>(id)
            })
            .await?
            .clone();
        let body = if self.streams(&part.range) {
            PartBody::Streamed(part.range.clone())
        } else {
            PartBody::Memory(Bytes::from(file.read_local(part.range.clone()).map_err(
                |e| StoreError::Transport(format!("reading staged data: errno {e}")),
            )?))
        };
        upload_part_body(&*self.store, file, key, id, part.number, body).await
    }

    /// Whether an upload part of `range` is streamed from the staging file
    /// rather than read into memory (subtle case 2): parts larger than
    /// `part_size`, which only files past 10,000 parts of `part_size` have.
    fn streams(&self, range: &Range<u64>) -> bool {
        range.end - range.start > self.limits.part_size
    }

    /// The body of upload part `range`: in memory up to `part_size`; past
    /// that, the staging file streamed, after the base bytes the part
    /// needs are copied into it in `part_size` pieces (subtle case 2).
    async fn part_body(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        range: Range<u64>,
    ) -> StoreResult<PartBody> {
        if !self.streams(&range) {
            return Ok(PartBody::Memory(self.content(file, snap, range).await?));
        }
        let mut at = range.start;
        let mut gaps = Vec::new();
        for d in snap
            .plan
            .dirty
            .iter()
            .filter(|d| d.end > range.start && d.start < range.end)
        {
            if d.start > at {
                gaps.push(at..d.start);
            }
            at = at.max(d.end);
        }
        if at < range.end {
            gaps.push(at..range.end);
        }
        for gap in gaps {
            for piece in pieces(gap, self.limits.part_size) {
                let bytes = self.base_bytes(snap, piece.clone()).await?;
                file.keep_base_bytes(&self.staging, piece.start, &bytes)
                    .map_err(|e| {
                        StoreError::Transport(format!(
                            "staging base bytes of {:?}: {}",
                            snap.key,
                            std::io::Error::from_raw_os_error(e)
                        ))
                    })?;
            }
        }
        Ok(PartBody::Streamed(range))
    }

    /// Completes the file's streaming upload if it still matches the
    /// snapshot, else aborts it; `None` when the ordinary plan must run.
    async fn finish_stream(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
    ) -> Option<StoreResult<BaseObject>> {
        let mut in_flight = file.with_stream(|s| s.in_flight.subscribe())?;
        let _ = in_flight.wait_for(|n| *n == 0).await;
        let stream = file.take_stream()?;
        let upload_id = stream.upload_id.get().cloned();
        let whole = crate::fs::write::plan::covers(&snap.plan.dirty, 0..snap.plan.size);
        let usable = !stream.broken
            && upload_id.is_some()
            && whole
            && stream.key == snap.key
            && snap.plan.size >= stream.next_offset
            && stream.done.len() as u32 + 1 == stream.next_number;
        let upload_id = upload_id?;
        if !usable {
            let _ = self
                .store
                .abort_multipart_upload(&stream.key, &upload_id)
                .await;
            let _ = self.staging.record(&Record::MultipartEnded { upload_id });
            return None;
        }
        let result = self.complete_stream(file, snap, &stream, &upload_id).await;
        if result.is_err() {
            let _ = self
                .store
                .abort_multipart_upload(&stream.key, &upload_id)
                .await;
        }
        let _ = self.staging.record(&Record::MultipartEnded { upload_id });
        Some(result)
    }

    async fn complete_stream(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        stream: &Stream,
        upload_id: &str,
    ) -> StoreResult<BaseObject> {
        let mut parts: Vec<CompletedPart> = stream.done.values().cloned().collect();
        let tail: Vec<(u32, Part)> = stream
            .tail(snap.plan.size, self.limits.part_size)
            .into_iter()
            .map(|p| (p.number, Part::Upload(p.range)))
            .collect();
        parts.extend(self.run_parts(file, snap, &tail, upload_id).await?);
        parts.sort_by_key(|p| p.part_number);
        let put = self
            .store
            .complete_multipart_upload(&CompleteMultipartRequest {
                key: snap.key.clone(),
                upload_id: upload_id.to_string(),
                parts,
            })
            .await?;
        if snap.meta != stream.meta {
            // The metadata changed after the upload was created with it.
            self.store
                .copy_object(&CopyRequest {
                    source_key: snap.key.clone(),
                    dest_key: snap.key.clone(),
                    directive: MetadataDirective::Replace(ObjectAttributes {
                        content_type: None,
                        metadata: to_metadata(&snap.meta),
                    }),
                    source_if_match: Some(put.etag.clone()),
                })
                .await?;
            return self.head(&snap.key, snap.plan.size).await;
        }
        Ok(BaseObject {
            etag: put.etag,
            size: snap.plan.size,
            appendable: false,
        })
    }

    /// AppendObject of `range` in pieces of at most `part_size`, each at
    /// the position the previous one ended; returns the ETag the last
    /// answer gave, if the server gives one.
    async fn append(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        range: Range<u64>,
        attributes: ObjectAttributes,
    ) -> StoreResult<Option<String>> {
        let mut position = range.start;
        let mut etag = None;
        for piece in pieces(range, self.limits.part_size) {
            let _permit = self.permit().await;
            let body = self.content(file, snap, piece.clone()).await?;
            let done = self
                .store
                .append_object(&AppendRequest {
                    key: snap.key.clone(),
                    position,
                    body,
                    attributes: if position == 0 {
                        attributes.clone()
                    } else {
                        ObjectAttributes::default()
                    },
                })
                .await?;
            position = done.next_position;
            etag = done.etag;
            if position != piece.end {
                return Err(StoreError::IncompleteBody(format!(
                    "append of {:?} ended at {position}, not {}",
                    snap.key, piece.end
                )));
            }
        }
        Ok(etag)
    }

    /// A multipart upload of `parts` (subtle case 3).
    async fn multipart(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        parts: Vec<Part>,
        attributes: ObjectAttributes,
    ) -> StoreResult<BaseObject> {
        let upload_id = self
            .store
            .create_multipart_upload(&snap.key, &attributes)
            .await?;
        let _ = self.staging.record(&Record::MultipartStarted {
            key: snap.key.clone(),
            upload_id: upload_id.clone(),
        });
        let result = self.upload_parts(file, snap, &parts, &upload_id).await;
        let result = match result {
            Ok(done) => {
                self.store
                    .complete_multipart_upload(&CompleteMultipartRequest {
                        key: snap.key.clone(),
                        upload_id: upload_id.clone(),
                        parts: done,
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self
                .store
                .abort_multipart_upload(&snap.key, &upload_id)
                .await;
        }
        let _ = self.staging.record(&Record::MultipartEnded { upload_id });
        let put = result?;
        Ok(BaseObject {
            etag: put.etag,
            size: snap.plan.size,
            appendable: false,
        })
    }

    /// Uploads (or copies) every part, `parts_in_flight` at a time
    /// mount-wide; returns them in order.
    async fn upload_parts(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        parts: &[Part],
        upload_id: &str,
    ) -> StoreResult<Vec<CompletedPart>> {
        let numbered: Vec<(u32, Part)> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32 + 1, p.clone()))
            .collect();
        self.run_parts(file, snap, &numbered, upload_id).await
    }

    /// Uploads (or copies) the numbered `parts`; returns them in order.
    async fn run_parts(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        parts: &[(u32, Part)],
        upload_id: &str,
    ) -> StoreResult<Vec<CompletedPart>> {
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::with_capacity(parts.len());
        for (number, part) in parts {
            let permit = self
                .parts
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let job = PartJob {
                store: self.store.clone(),
                file: file.clone(),
                key: snap.key.clone(),
                upload_id: upload_id.to_string(),
                part_number: *number,
                part: part.clone(),
                base_etag: snap.plan.base.as_ref().map(|b| b.etag.clone()),
            };
            let body = match part {
                Part::Upload(r) => Some(self.part_body(file, snap, r.clone()).await?),
                Part::Copy(_) => None,
            };
            tasks.spawn(async move {
                let _permit = permit;
                job.run(body).await
            });
            // Collect finished parts as we go, so a failure stops early.
            while let Some(finished) = tasks.try_join_next() {
                done.push(finished.map_err(join_error)??);
            }
        }
        while let Some(finished) = tasks.join_next().await {
            done.push(finished.map_err(join_error)??);
        }
        done.sort_by_key(|p| p.part_number);
        Ok(done)
    }

    /// The bytes of `range` of the snapshot's content (subtle case 1).
    async fn content(
        &self,
        file: &Arc<DirtyFile>,
        snap: &Snapshot,
        range: Range<u64>,
    ) -> StoreResult<Bytes> {
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        let local_error = |e: i32| {
            StoreError::Transport(format!(
                "reading the staged data of {:?}: {}",
                snap.key,
                std::io::Error::from_raw_os_error(e)
            ))
        };
        let dirty = snap
            .plan
            .dirty
            .iter()
            .filter(|d| d.end > range.start && d.start < range.end);
        for d in dirty {
            let (s, e) = (d.start.max(range.start), d.end.min(range.end));
            if s > at {
                out.extend_from_slice(&self.base_bytes(snap, at..s).await?);
            }
            out.extend_from_slice(&file.read_local(s..e).map_err(local_error)?);
            at = e;
        }
        if at < range.end {
            out.extend_from_slice(&self.base_bytes(snap, at..range.end).await?);
        }
        Ok(out.freeze())
    }

    /// Bytes of the base object (zeros past `base_valid`, which cannot
    /// happen while the dirty ranges cover everything there).
    async fn base_bytes(&self, snap: &Snapshot, range: Range<u64>) -> StoreResult<Bytes> {
        let valid = range.start..range.end.min(snap.plan.base_valid);
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        if let (Some(base), false) = (&snap.plan.base, valid.is_empty()) {
            let got = self
                .store
                .get_object(&GetRequest {
                    key: snap.key.clone(),
                    range: Some(valid.clone()),
                    if_match: Some(base.etag.clone()),
                })
                .await?;
            if got.body.len() as u64 != valid.end - valid.start {
                return Err(StoreError::IncompleteBody(format!(
                    "base of {:?}: {} of {} bytes",
                    snap.key,
                    got.body.len(),
                    valid.end - valid.start
                )));
            }
            out.extend_from_slice(&got.body);
        }
        out.resize((range.end - range.start) as usize, 0);
        Ok(out.freeze())
    }

    /// HEADs the object just written (subtle case 4).
    async fn head(&self, key: &str, size: u64) -> StoreResult<BaseObject> {
        let meta = self.store.head_object(key).await?;
        if meta.size != size {
            return Err(StoreError::IncompleteBody(format!(
                "{key:?} is {} bytes after the upload, not {size}",
                meta.size
            )));
        }
        Ok(crate::fs::write::base_of(&meta))
    }
}

/// `range` cut into pieces of at most `max` bytes (one empty piece for an
/// empty range, so that an empty file is still created).
fn pieces(range: Range<u64>, max: u64) -> Vec<Range<u64>> {
    if range.is_empty() {
        return vec![range];
    }
    let max = max.max(1);
    (range.start..range.end)
        .step_by(max as usize)
        .map(|s| s..(s + max).min(range.end))
        .collect()
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Transport(format!("part upload task ended abnormally: {e}"))
}

/// The bytes of an upload part.
enum PartBody {
    /// Read into memory (at most `part_size`).
    Memory(Bytes),
    /// This range of the staging file, read while it is sent.
    Streamed(Range<u64>),
}

/// Uploads part `number` with `body`.
async fn upload_part_body(
    store: &dyn ObjectStore,
    file: &Arc<DirtyFile>,
    key: String,
    upload_id: String,
    part_number: u32,
    body: PartBody,
) -> StoreResult<CompletedPart> {
    match body {
        PartBody::Memory(body) => {
            store
                .upload_part(&UploadPartRequest {
                    key,
                    upload_id,
                    part_number,
                    body,
                })
                .await
        }
        PartBody::Streamed(range) => {
            store
                .upload_part_streamed(&StreamedPartRequest {
                    key,
                    upload_id,
                    part_number,
                    source: file.clone(),
                    range,
                })
                .await
        }
    }
}

/// One part, run in its own task.
struct PartJob {
    store: Arc<dyn ObjectStore>,
    file: Arc<DirtyFile>,
    key: String,
    upload_id: String,
    part_number: u32,
    part: Part,
    base_etag: Option<String>,
}

impl PartJob {
    async fn run(self, body: Option<PartBody>) -> StoreResult<CompletedPart> {
        match self.part {
            Part::Upload(_) => {
                let body = body.unwrap_or(PartBody::Memory(Bytes::new()));
                upload_part_body(
                    &*self.store,
                    &self.file,
                    self.key,
                    self.upload_id,
                    self.part_number,
                    body,
                )
                .await
            }
            Part::Copy(range) => {
                self.store
                    .upload_part_copy(&UploadPartCopyRequest {
                        key: self.key.clone(),
                        upload_id: self.upload_id,
                        part_number: self.part_number,
                        source_key: self.key,
                        source_range: Some(range),
                        source_if_match: self.base_etag,
                    })
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::staging::journal::FileMeta;
    use crate::store::memory::MemoryStore;
    use crate::store::{Dialect, Operation, Provider};

    const MIB: u64 = 1 << 20;

    struct Fixture {
        store: Arc<MemoryStore>,
        staging: Arc<StagingArea>,
        uploader: Uploader,
        dir: std::path::PathBuf,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(name: &str, provider: Provider) -> Fixture {
        let dir =
            std::env::temp_dir().join(format!("bucketfs-upload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let staging = Arc::new(StagingArea::open(&dir, u64::MAX).unwrap().0);
        let store =
            Arc::new(MemoryStore::new(Dialect::new(provider), "b").with_min_part_size(5 * MIB));
        let uploader = Uploader::new(store.clone(), staging.clone(), 8 * MIB, 4);
        Fixture {
            store,
            staging,
            uploader,
            dir,
        }
    }

    fn pattern(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    impl Fixture {
        async fn put(&self, key: &str, body: Vec<u8>) -> BaseObject {
            let r = self
                .store
                .put_object(&PutRequest {
                    key: key.into(),
                    body: body.clone().into(),
                    attributes: ObjectAttributes::default(),
                })
                .await
                .unwrap();
            BaseObject {
                etag: r.etag,
                size: body.len() as u64,
                appendable: false,
            }
        }

        fn file(&self, key: &str, base: Option<BaseObject>, truncate: bool) -> Arc<DirtyFile> {
            let (id, f) = self.staging.create().unwrap();
            let meta = FileMeta {
                mode: 0o100644,
                ..FileMeta::default()
            };
            Arc::new(DirtyFile::new(
                id,
                f,
                key.into(),
                base,
                false,
                meta,
                truncate,
            ))
        }

        async fn upload(&self, f: &Arc<DirtyFile>) -> BaseObject {
            let snap = f.stage_and_begin().unwrap();
            let base = self.uploader.upload(f, &snap).await.unwrap();
            f.finish_upload(snap.generation, base.clone());
            base
        }

        async fn body(&self, key: &str) -> Vec<u8> {
            self.store
                .get_object(&GetRequest {
                    key: key.into(),
                    range: None,
                    if_match: None,
                })
                .await
                .unwrap()
                .body
                .to_vec()
        }

        fn bytes_uploaded(&self) -> u64 {
            [
                Operation::PutObject,
                Operation::UploadPart,
                Operation::AppendObject,
            ]
            .iter()
            .map(|op| self.store.bytes_received(*op))
            .sum()
        }
    }

    #[tokio::test]
    async fn new_files_of_every_size_arrive_whole() {
        let fx = fixture("new", Provider::S3);
        for (i, len) in [0, 1, 8 * MIB, 8 * MIB + 1, 30 * MIB]
            .into_iter()
            .enumerate()
        {
            let key = format!("f{i}");
            let data = pattern(len, i as u8);
            let f = fx.file(&key, None, true);
            f.write(&fx.staging, 0, &data).unwrap_or(0);
            let base = fx.upload(&f).await;
            assert_eq!(base.size, len);
            assert!(fx.body(&key).await == data, "{key}");
            let meta = fx.store.head_object(&key).await.unwrap();
            assert_eq!(meta.metadata["mode"], "33188");
        }
    }

    #[tokio::test]
    async fn parts_larger_than_part_size_stream_from_staging_with_base_bytes_kept_there() {
        let fx = fixture("stream-big", Provider::S3);
        let old = pattern(20 * MIB, 1);
        let base = fx.put("big", old.clone()).await;
        let f = fx.file("big", Some(base), false);
        f.write(&fx.staging, MIB, b"new bytes").unwrap();
        let snap = f.stage_and_begin().unwrap();
        let mut want = old.clone();
        want[MIB as usize..MIB as usize + 9].copy_from_slice(b"new bytes");

        // At most part_size: in memory, as it always was.
        let small = fx.uploader.part_body(&f, &snap, 0..8 * MIB).await.unwrap();
        assert!(matches!(small, PartBody::Memory(b) if b[..] == want[..8 * MIB as usize]));
        // Larger: the base bytes are kept in the staging file, which then
        // holds the whole part, and the part is streamed from it.
        let staged_before = fx.staging.staged_bytes();
        let big = fx.uploader.part_body(&f, &snap, 0..20 * MIB).await.unwrap();
        assert!(matches!(big, PartBody::Streamed(ref r) if *r == (0..20 * MIB)));
        assert!(
            f.read_local(0..20 * MIB).unwrap() == want,
            "staging holds the part"
        );
        assert_eq!(
            fx.staging.staged_bytes() - staged_before,
            20 * MIB - 9,
            "the kept base bytes are claimed"
        );
        // A write made meanwhile is not overwritten by base bytes.
        f.write(&fx.staging, 2 * MIB, b"later").unwrap();
        f.keep_base_bytes(
            &fx.staging,
            2 * MIB,
            &old[2 * MIB as usize..3 * MIB as usize],
        )
        .unwrap();
        assert_eq!(f.read_local(2 * MIB..2 * MIB + 5).unwrap(), b"later");
    }

    #[tokio::test]
    async fn appends_on_oss_send_only_the_new_bytes() {
        let fx = fixture("append", Provider::Oss);
        let f = fx.file("log", None, true);
        f.write(&fx.staging, 0, b"first line\n").unwrap();
        let base = fx.upload(&f).await;
        assert!(base.appendable, "a new small file is created appendable");
        let before = fx.bytes_uploaded();
        for i in 0..20 {
            let line = format!("line {i}\n");
            let at = f.size();
            f.write(&fx.staging, at, line.as_bytes()).unwrap();
            fx.upload(&f).await;
        }
        let sent = fx.bytes_uploaded() - before;
        let expected: u64 = (0..20).map(|i| format!("line {i}\n").len() as u64).sum();
        assert_eq!(sent, expected);
        let body = fx.body("log").await;
        assert!(body.starts_with(b"first line\nline 0\n") && body.ends_with(b"line 19\n"));
    }

    #[tokio::test]
    async fn a_small_write_into_a_large_object_copies_the_rest() {
        let fx = fixture("copy", Provider::S3);
        let data = pattern(40 * MIB, 7);
        let base = fx.put("big", data.clone()).await;
        let f = fx.file("big", Some(base), false);
        f.write(&fx.staging, 20 * MIB, b"XYZ").unwrap();
        let before = fx.bytes_uploaded();
        fx.upload(&f).await;
        let sent = fx.bytes_uploaded() - before;
        assert!(sent <= 5 * MIB, "uploaded {sent} bytes for a 3-byte change");
        assert!(fx.store.calls(Operation::UploadPartCopy) >= 2);
        let mut expected = data;
        expected[20 * MIB as usize..20 * MIB as usize + 3].copy_from_slice(b"XYZ");
        assert!(fx.body("big").await == expected);
    }

    #[tokio::test]
    async fn a_small_object_with_a_change_is_rewritten_from_its_base() {
        let fx = fixture("small", Provider::S3);
        let data = pattern(MIB, 3);
        let base = fx.put("s", data.clone()).await;
        let f = fx.file("s", Some(base), false);
        f.write(&fx.staging, 10, b"ab").unwrap();
        f.truncate(&fx.staging, 100).unwrap();
        fx.upload(&f).await;
        let mut expected = data[..100].to_vec();
        expected[10..12].copy_from_slice(b"ab");
        assert_eq!(fx.body("s").await, expected);
    }

    #[tokio::test]
    async fn a_base_replaced_by_another_client_fails_the_upload() {
        let fx = fixture("replaced", Provider::S3);
        let base = fx.put("r", pattern(MIB, 1)).await;
        let f = fx.file("r", Some(base), false);
        f.write(&fx.staging, 0, b"x").unwrap();
        fx.put("r", pattern(MIB, 2)).await;
        let snap = f.stage_and_begin().unwrap();
        let err = fx.uploader.upload(&f, &snap).await.unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed(_)), "{err:?}");
    }

    #[tokio::test]
    async fn pfs_buckets_write_in_place() {
        let dir = std::env::temp_dir().join(format!("bucketfs-upload-pfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let staging = Arc::new(StagingArea::open(&dir, u64::MAX).unwrap().0);
        let dialect = Dialect::new(Provider::Obs).with_bucket_info(&crate::store::BucketInfo {
            obs_pfs: true,
            ..Default::default()
        });
        let store = Arc::new(MemoryStore::new(dialect, "b"));
        let uploader = Uploader::new(store.clone(), staging.clone(), 8 * MIB, 4);
        let data = pattern(20 * MIB, 9);
        let put = store
            .put_object(&PutRequest {
                key: "p".into(),
                body: data.clone().into(),
                attributes: ObjectAttributes::default(),
            })
            .await
            .unwrap();
        let (id, file) = staging.create().unwrap();
        let f = Arc::new(DirtyFile::new(
            id,
            file,
            "p".into(),
            Some(BaseObject {
                etag: put.etag,
                size: data.len() as u64,
                appendable: false,
            }),
            false,
            FileMeta::default(),
            false,
        ));
        f.write(&staging, 5, b"hello").unwrap();
        f.truncate(&staging, 10 * MIB).unwrap();
        let snap = f.stage_and_begin().unwrap();
        uploader.upload(&f, &snap).await.unwrap();
        assert_eq!(store.calls(Operation::UploadPart), 0);
        assert_eq!(store.calls(Operation::PutObject), 1, "only the setup put");
        assert!(store.bytes_received(Operation::ModifyObject) <= 5);
        let got = store
            .get_object(&GetRequest {
                key: "p".into(),
                range: None,
                if_match: None,
            })
            .await
            .unwrap()
            .body;
        let mut expected = data[..10 * MIB as usize].to_vec();
        expected[5..10].copy_from_slice(b"hello");
        assert!(got[..] == expected[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_sequential_write_streams_its_parts_before_close() {
        let fx = fixture("stream", Provider::S3);
        let data = pattern(40 * MIB + 123, 5);
        let f = fx.file("streamed", None, true);
        for chunk in data.chunks(MIB as usize) {
            let at = f.size();
            f.write(&fx.staging, at, chunk).unwrap();
            while let Some((part, id)) = f.next_stream_part(8 * MIB) {
                fx.uploader.upload_stream_part(&f, part, id).await;
            }
        }
        // Parts went up while the file was written: all but the tail.
        assert_eq!(fx.store.calls(Operation::UploadPart), 5);
        assert_eq!(fx.store.calls(Operation::CompleteMultipartUpload), 0);
        fx.upload(&f).await;
        assert_eq!(fx.store.calls(Operation::UploadPart), 6);
        assert!(fx.body("streamed").await == data);
        assert!(f.with_stream(|_| ()).is_none(), "the stream is finished");
    }

    #[tokio::test]
    async fn a_write_behind_the_stream_falls_back_to_a_whole_upload() {
        let fx = fixture("broken", Provider::S3);
        let mut data = pattern(20 * MIB, 6);
        let f = fx.file("rewritten", None, true);
        f.write(&fx.staging, 0, &data).unwrap();
        while let Some((part, id)) = f.next_stream_part(8 * MIB) {
            fx.uploader.upload_stream_part(&f, part, id).await;
        }
        assert_eq!(fx.store.calls(Operation::UploadPart), 2);
        f.write(&fx.staging, 10, b"changed").unwrap();
        data[10..17].copy_from_slice(b"changed");
        fx.upload(&f).await;
        assert!(fx.body("rewritten").await == data);
        assert_eq!(fx.store.calls(Operation::AbortMultipartUpload), 1);
    }

    #[test]
    fn pieces_cover_the_range() {
        assert_eq!(pieces(0..0, 4), vec![0..0]);
        assert_eq!(pieces(3..10, 4), vec![3..7, 7..10]);
    }
}
