//! Background uploads of dirty files, crash recovery and the drain at
//! unmount.
//!
//! Subtle cases:
//! 1. **One task per file.** `schedule` starts an upload task unless the
//!    file has one; the task uploads generation after generation until
//!    nothing is left, under the file's upload lock (rename and unlink take
//!    it too), then ends. A task that finds work arriving as it ends keeps
//!    going (`DirtyFile::release_task`), so no schedule is lost.
//! 2. **Never dropped.** A failed upload is retried with growing delays (1 s
//!    doubling to a minute, with jitter) for as long as the daemon runs;
//!    waiters (fsync, `sync_close`) get the failure at once. Unmount waits
//!    for every upload (`drain`); a second signal ends the wait and leaves
//!    the data staged for the next mount on the same cache directory.
//! 3. **A base that moved.** An upload failing because the object is not
//!    what the file was based on (replaced, deleted, not appendable after
//!    all, another length) HEADs the object and continues over what is
//!    there now: the file's written bytes win, the object provides the
//!    rest. Logged, since another client's change is being overwritten.
//! 4. **Retirement.** A dirty file that is uploaded (or unlinked) and has
//!    no open handle leaves the registry and its staging file is deleted;
//!    the inode keeps the uploaded object's attributes and the parent's
//!    listing is refreshed. When no dirty file is left, the journal is
//!    emptied.
//! 5. **Recovery.** At mount, files the journal still owes are uploaded in
//!    the background; lookups and listings that touch their keys wait for
//!    them first, and multipart uploads left open are aborted.

use super::BucketFs;
use super::write_ops::parent_prefix;
use crate::errno::errno;
use crate::fs::namespace::EntryAttr;
use crate::fs::write::dirty::DirtyFile;
use crate::staging::journal::{BaseObject, Record, Replay};
use crate::store::StoreError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// First retry delay of a failed upload, doubled up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// How often the drain status file is rewritten while it changes.
const DRAIN_STATUS_EVERY: Duration = Duration::from_millis(250);

/// How often unmount reports the uploads it is waiting for.
const DRAIN_REPORT_EVERY: Duration = Duration::from_secs(5);

fn retry_delay(failures: u32) -> Duration {
    let exp = RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16));
    let capped = exp.min(RETRY_MAX);
    // Half fixed, half random: spread retries of many files.
    capped / 2 + capped.mul_f64(fastrand::f64() / 2.0)
}

/// Whether `e` says the base object is not what the file believed.
fn base_moved(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::PreconditionFailed(_)
            | StoreError::NoSuchKey { .. }
            | StoreError::ObjectNotAppendable { .. }
            | StoreError::PositionNotEqualToLength { .. }
            | StoreError::InvalidRange(_)
    )
}

impl BucketFs {
    /// Starts the upload task of `file` unless it has one (subtle case 1).
    pub(super) fn schedule(&self, file: &Arc<DirtyFile>, ino: Option<u64>) {
        if !file.claim_task() {
            return;
        }
        let Some(fs) = self.me.upgrade() else {
            return;
        };
        let file = file.clone();
        tokio::spawn(async move { fs.upload_task(file, ino).await });
    }

    async fn upload_task(self: Arc<Self>, file: Arc<DirtyFile>, ino: Option<u64>) {
        let Some(writes) = &self.writes else {
            return;
        };
        let mut failures = 0u32;
        loop {
            let running = file.upload_lock.lock().await;
            let Some(snap) = file.begin_upload() else {
                drop(running);
                if file.release_task() {
                    continue;
                }
                break;
            };
            match writes.uploader.upload(&file, &snap).await {
                Ok(base) => {
                    file.finish_upload(snap.generation, base.clone());
                    if let Err(e) = writes.staging.record(&Record::Uploaded {
                        id: file.id,
                        generation: snap.generation,
                    }) {
                        warn!("cannot write the staging journal: {e}");
                    }
                    drop(running);
                    if failures > 0 {
                        info!(key = %snap.key, "upload succeeded after {failures} failures");
                    }
                    failures = 0;
                    self.uploaded(&file, ino, &base);
                }
                Err(e) => {
                    file.fail_upload(snap.generation, errno(&e));
                    failures += 1;
                    warn!(key = %snap.key, attempt = failures, "upload failed, retrying: {e}");
                    if base_moved(&e) {
                        self.rebase(&file).await;
                    }
                    drop(running);
                    tokio::time::sleep(retry_delay(failures)).await;
                }
            }
        }
        self.retire(&file, ino);
    }

    /// The inode and the parent's listing after an upload.
    fn uploaded(&self, file: &Arc<DirtyFile>, ino: Option<u64>, base: &BaseObject) {
        let key = file.key();
        if let Some(ino) = ino {
            let mut inodes = self.inodes.lock();
            if let Some(inode) = inodes.get(ino).filter(|i| i.key == key) {
                let mut attr: EntryAttr = inode.attr.clone();
                attr.etag = Some(base.etag.clone());
                attr.size = base.size;
                attr.mtime = SystemTime::now();
                let expires = Instant::now() + self.config.attr_ttl;
                inodes.set_attr(ino, attr, expires);
            }
        }
        if !file.with(|st| st.unlinked) {
            self.file_listed(&key, base);
        }
    }

    /// Continues over the object as it is now (subtle case 3).
    async fn rebase(&self, file: &Arc<DirtyFile>) {
        let key = file.key();
        let found = match self.store.head_object(&key).await {
            Ok(h) => Some(crate::fs::write::base_of(&h)),
            Err(StoreError::NoSuchKey { .. }) => None,
            Err(e) => {
                warn!(key = %key, "cannot check the object under an upload: {e}");
                return;
            }
        };
        let before = file.with(|st| st.base.clone());
        let same_object = match (&before, &found) {
            (Some(b), Some(f)) => b.etag == f.etag,
            _ => false,
        };
        if !same_object {
            warn!(
                key = %key,
                "the object changed on the server while this mount had unsaved changes to it; \
                 the changes written here are applied over the new version"
            );
        }
        file.rebase(found);
    }

    /// Removes a finished dirty file (subtle case 4).
    pub(super) fn retire(&self, file: &Arc<DirtyFile>, ino: Option<u64>) {
        let Some(writes) = &self.writes else {
            return;
        };
        if !file.is_idle() {
            return;
        }
        let unlinked = file.with(|st| st.unlinked);
        let removed = match ino {
            Some(ino) => {
                // The inode shows the uploaded object from now on: take the
                // file's view before it leaves the registry.
                let attr = self.inode(ino).ok().map(|i| self.overlay(ino, i.attr));
                let removed = writes.remove_if_idle(ino, file);
                if let (true, false, Some(mut attr)) = (removed, unlinked, attr) {
                    attr.etag = file.with(|st| st.base.as_ref().map(|b| b.etag.clone()));
                    let expires = Instant::now() + self.config.attr_ttl;
                    self.inodes.lock().set_attr(ino, attr, expires);
                }
                removed
            }
            None => {
                writes.remove_recovered(file);
                true
            }
        };
        if removed {
            writes.staging.remove(file.id, file.claimed());
            if writes.is_empty()
                && let Err(e) = writes.staging.clear_journal()
            {
                warn!("cannot empty the staging journal: {e}");
            }
            if unlinked {
                self.invalidate_listing(parent_prefix(&file.key()));
            }
        }
    }

    /// Uploads what a previous run left staged (subtle case 5).
    pub fn recover(&self, replay: Replay) {
        let Some(writes) = &self.writes else {
            return;
        };
        for staged in replay.staged {
            let key = staged.key.clone();
            match writes.staging.open_file(staged.id) {
                Ok(f) => {
                    info!(key = %key, bytes = staged.size, "resuming an upload left by the previous run");
                    let file = Arc::new(DirtyFile::recover(f, staged));
                    writes.insert_recovered(file.clone());
                    self.schedule(&file, None);
                }
                Err(e) => warn!(key = %key, "staged data of an unfinished upload is missing: {e}"),
            }
        }
        for (key, upload_id) in replay.multipart {
            let store = self.store.clone();
            let staging = writes.staging.clone();
            tokio::spawn(async move {
                match store.abort_multipart_upload(&key, &upload_id).await {
                    Ok(()) | Err(StoreError::NoSuchUpload { .. }) => {
                        let _ = staging.record(&Record::MultipartEnded { upload_id });
                    }
                    Err(e) => {
                        warn!(key = %key, "cannot abort a multipart upload left by the previous run: {e}")
                    }
                }
            });
        }
    }

    /// Waits until every staged file is uploaded (unmount; subtle case 2).
    pub async fn drain(&self) {
        let Some(writes) = &self.writes else {
            return;
        };
        let mut reported = Instant::now();
        let mut status_written: Option<(Instant, (u64, u64))> = None;
        loop {
            let pending = writes.pending();
            // For `bucketfs umount` and a mount waiting on this staging
            // directory (staging/handover.rs).
            let left = (
                pending.len() as u64,
                pending.iter().map(|f| f.size()).sum::<u64>(),
            );
            let stale = status_written
                .is_none_or(|(at, was)| was != left && at.elapsed() >= DRAIN_STATUS_EVERY);
            if pending.is_empty() {
                writes.staging.set_drain_status(None);
                return;
            }
            if stale {
                writes.staging.set_drain_status(Some(left));
                status_written = Some((Instant::now(), left));
            }
            for (ino, file) in writes.all() {
                if file.has_unstaged() || file.has_pending() {
                    let _ = self.stage(&file, Some(ino));
                }
            }
            if reported.elapsed() >= DRAIN_REPORT_EVERY {
                let keys: Vec<String> = pending.iter().take(5).map(|f| f.key()).collect();
                info!(
                    "unmount waits for {} upload(s) ({}{}); a second signal stops waiting and keeps them staged",
                    pending.len(),
                    keys.join(", "),
                    if pending.len() > keys.len() {
                        ", ..."
                    } else {
                        ""
                    }
                );
                reported = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
