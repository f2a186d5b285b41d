//! The write side of [`BucketFs`]: POSIX calls that change the bucket.
//!
//! File data goes through dirty files (`fs::write`): written to local
//! staging, uploaded in the background after `close` (`uploads.rs`).
//! Namespace changes (mkdir, rmdir, unlink, rename, symlink) and metadata
//! changes of clean files are made on the bucket at once, before the call
//! returns.
//!
//! Subtle cases:
//! 1. **Close-to-open.** `flush` (each `close`) writes the file's state to
//!    the journal and schedules its upload; it waits for the upload only
//!    with `sync_close`. `fsync` always waits, and reports the upload's
//!    failure (EIO or the store's errno); the data stays staged and the
//!    upload is retried.
//! 2. **Local names.** A created file is visible at once to this mount
//!    (lookup, readdir, getattr answer from its dirty file) and to other
//!    clients once uploaded.
//! 3. **Unlink of an open file.** The name disappears at once (hidden from
//!    listings, negative lookups); the object is deleted at the last close,
//!    so open handles keep reading it, unless a new file took the name in
//!    between.
//! 4. **Rename.** Native where the bucket has it (OSS hierarchical
//!    namespace, OBS PFS), else copy then delete, large objects with
//!    multipart copy, directories key by key with bounded parallelism:
//!    not atomic, and documented so. A file never uploaded is renamed
//!    locally, without a request. A file with staged changes is uploaded
//!    first, under its upload lock, so no upload can race the rename.
//!    `RENAME_EXCHANGE` is refused (EINVAL), `RENAME_NOREPLACE` honoured.
//! 5. **Metadata of clean objects** (chmod, chown, utimens, xattrs) is
//!    replaced with a self-copy (CopyObject, REPLACE), no data moved. An
//!    implicit directory gets a marker object to carry it.
//! 6. **xattrs** are `user.*` only, stored the s3fs way (meta.rs) and
//!    bounded by the 2 KiB of user metadata S3 allows (ENOSPC beyond).
//!    Other namespaces get ENOTSUP, without a request: the kernel asks for
//!    `security.capability` on writes, and `ls -l` asks for
//!    `security.selinux` and `system.posix_acl_access` on every file unless
//!    told once (ENOTSUP, not ENODATA) that the filesystem has none: with
//!    ENODATA `ls -l` of 10,000 files took 4x as long.

use super::{BucketFs, Entry, FsResult, Handle};
use crate::fs::inode::{AttrSource, Inode};
use crate::fs::namespace::{
    DirEntry, EntryAttr, EntryKind, Listing, NAME_MAX, attr_from_head, file_attr_from_listing,
    implicit_dir_attr, valid_component,
};
use crate::fs::reader::FileReader;
use crate::fs::write::Writes;
use crate::fs::write::dirty::{DirtyFile, Piece};
use crate::fs::write::meta::{from_metadata, to_metadata};
use crate::fs::write::plan::{MAX_PART, MAX_PARTS, MIN_PART};
use crate::staging::journal::{BaseObject, FileMeta, Record};
use crate::store::{
    CompleteMultipartRequest, CopyRequest, DELETE_BATCH_MAX, ListEntry, ListRequest,
    MetadataDirective, ObjectAttributes, ObjectType, PutRequest, StoreError, UploadPartCopyRequest,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tracing::{info, warn};

/// Largest object CopyObject copies in one request (S3, OSS, OBS, COS);
/// larger ones are copied part by part.
const SINGLE_COPY_MAX: u64 = 5 << 30;

/// Keys copied at once when renaming a directory key by key.
const RENAME_PARALLELISM: usize = 16;

/// Most bytes of user metadata S3 accepts on an object.
const USER_METADATA_MAX: usize = 2048;

/// A directory or symlink to create (see `BucketFs::put_entry`).
struct NewEntry {
    /// `/` for a directory marker.
    suffix: &'static str,
    body: Bytes,
    kind: EntryKind,
    perm: u32,
    uid: u32,
    gid: u32,
}

/// Changes asked by setattr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub size: Option<u64>,
    /// Permission bits.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

fn io_errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn unix_time(t: SystemTime) -> (i64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            (-(d.as_secs() as i64), 0)
        }
    }
}

/// The directory part of `key` (up to and including the last `/`).
pub(super) fn parent_prefix(key: &str) -> &str {
    let trimmed = key.strip_suffix('/').unwrap_or(key);
    match trimmed.rfind('/') {
        Some(i) => &key[..=i],
        None => "",
    }
}

fn type_bits(kind: EntryKind) -> u32 {
    match kind {
        EntryKind::File => libc::S_IFREG,
        EntryKind::Directory => libc::S_IFDIR,
        EntryKind::Symlink => libc::S_IFLNK,
    }
}

impl BucketFs {
    /// The write path, or EROFS on a read-only mount.
    pub(super) fn writes(&self) -> FsResult<&Writes> {
        self.writes.as_ref().ok_or(libc::EROFS)
    }

    /// The dirty file of `ino`, if it has one.
    pub(super) fn staged(&self, ino: u64) -> Option<Arc<DirtyFile>> {
        self.writes.as_ref()?.get(ino)
    }

    /// `attr` with what the dirty file of `ino` says (size, mtime, mode,
    /// owner).
    pub(super) fn overlay(&self, ino: u64, mut attr: EntryAttr) -> EntryAttr {
        if let Some(file) = self.staged(ino) {
            file.with(|st| {
                attr.size = st.size;
                attr.mtime = match st.meta.mtime {
                    Some((s, n)) if s >= 0 => {
                        SystemTime::UNIX_EPOCH + std::time::Duration::new(s as u64, n)
                    }
                    _ => st.mtime,
                };
                attr.perm = st.meta.mode & 0o7777;
                attr.uid = st.meta.uid;
                attr.gid = st.meta.gid;
            });
        }
        attr
    }

    /// A child bound in the inode table with a dirty file: answered
    /// locally (subtle case 2). Counts one kernel lookup.
    pub(super) fn staged_entry(&self, parent: u64, name: &str) -> Option<Entry> {
        let ino = self.inodes.lock().child(parent, name)?.ino;
        let file = self.staged(ino)?;
        if file.with(|st| st.unlinked) {
            return None;
        }
        let inode = self.inodes.lock().add_lookup(ino)?;
        Some(Entry {
            ino,
            ttl: self.config.attr_ttl,
            attr: self.overlay(ino, inode.attr),
        })
    }

    /// The children of directory `ino` that have dirty files, by name.
    pub(super) fn staged_children(&self, ino: u64) -> Vec<(String, Inode)> {
        let Some(writes) = &self.writes else {
            return Vec::new();
        };
        let files = writes.all();
        let inodes = self.inodes.lock();
        files
            .into_iter()
            .filter(|(_, f)| !f.with(|st| st.unlinked))
            .filter_map(|(child, _)| inodes.get(child))
            .filter(|i| i.parent == ino && inodes.child(ino, &i.name).map(|c| c.ino) == Some(i.ino))
            .map(|i| (i.name.clone(), i.clone()))
            .collect()
    }

    /// Waits for uploads recovered from the journal under `prefix` (a key
    /// or a directory prefix), so nobody reads a version they replace.
    pub(super) async fn await_recovered(&self, prefix: &str) {
        let Some(writes) = &self.writes else {
            return;
        };
        for file in writes.recovered_under(prefix) {
            let _ = file.wait_uploaded(file.generation()).await;
        }
    }

    /// Registers a file handle of `ino`.
    pub(super) fn add_file_handle(&self, ino: u64, handle: Handle) -> u64 {
        *self.open_files.lock().entry(ino).or_insert(0) += 1;
        self.add_handle(handle)
    }

    /// The dirty file of `inode`, made from the object if it has none yet,
    /// held once more (`handles`): the caller releases it at close, or
    /// with [`BucketFs::release_hold`].
    pub(super) async fn dirty_for(
        &self,
        inode: &Inode,
        truncate: bool,
    ) -> FsResult<Arc<DirtyFile>> {
        let writes = self.writes()?;
        if let Some(file) = writes.get_held(inode.ino) {
            if truncate && let Err(e) = file.truncate(&writes.staging, 0) {
                self.release_hold(&file, inode.ino);
                return Err(e);
            }
            return Ok(file);
        }
        let mode = type_bits(inode.attr.kind) | inode.attr.perm;
        let (base, meta, has_mtime) = match self.store.head_object(&inode.key).await {
            Ok(head) => {
                let attr = attr_from_head(&inode.key, &head, &self.config.defaults);
                let (meta, has_mtime) = from_metadata(
                    &head.metadata,
                    type_bits(attr.kind) | attr.perm,
                    attr.uid,
                    attr.gid,
                );
                (Some(crate::fs::write::base_of(&head)), meta, has_mtime)
            }
            Err(StoreError::NoSuchKey { .. }) => (None, own_meta(inode, mode), false),
            Err(e) => return Err(self.fail(&format!("HEAD {:?}", inode.key), e)),
        };
        let (id, staging_file) = writes.staging.create().map_err(io_errno)?;
        let file = Arc::new(DirtyFile::new(
            id,
            staging_file,
            inode.key.clone(),
            base,
            has_mtime,
            meta,
            truncate,
        ));
        let file = writes
            .insert_held(inode.ino, file.clone())
            .unwrap_or_else(|winner| {
                // Another call made one first: use it, drop ours.
                writes.staging.remove(file.id, 0);
                if truncate {
                    let _ = winner.truncate(&writes.staging, 0);
                }
                winner
            });
        Ok(file)
    }

    /// Drops a hold on `file` (a handle's, or one taken for a single
    /// operation): the file is staged when nothing holds it any more, as a
    /// close would. Data written through a handle never flushed (which the
    /// kernel, flushing on close, does not leave) is staged all the same.
    pub(super) fn release_hold(&self, file: &Arc<DirtyFile>, ino: u64) {
        let handles = file.with(|st| {
            st.handles = st.handles.saturating_sub(1);
            st.handles
        });
        if handles == 0 {
            if file.has_unstaged() {
                let _ = self.stage(file, Some(ino));
            } else if !file.is_clean() {
                // Journaled by a close that left the upload to this one.
                self.schedule(file, Some(ino));
            }
            self.retire(file, Some(ino));
        }
    }

    /// Reads `offset..offset+len` of a dirty file: staged bytes from disk,
    /// the rest from its base object (pinned to the base's ETag). The
    /// file's own upload may replace the base between the choice of pieces
    /// and the read (ESTALE): then the read waits for that upload to end
    /// and starts again over the new base.
    pub(super) async fn read_staged(
        &self,
        file: &Arc<DirtyFile>,
        base_reader: Option<&parking_lot::Mutex<Option<Arc<FileReader>>>>,
        offset: u64,
        len: u32,
    ) -> FsResult<Bytes> {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            match self.read_staged_once(file, base_reader, offset, len).await {
                Err(libc::ESTALE) if attempt < ATTEMPTS => {
                    drop(file.upload_lock.lock().await);
                }
                other => return other,
            }
        }
        unreachable!("the last attempt returns")
    }

    async fn read_staged_once(
        &self,
        file: &Arc<DirtyFile>,
        base_reader: Option<&parking_lot::Mutex<Option<Arc<FileReader>>>>,
        offset: u64,
        len: u32,
    ) -> FsResult<Bytes> {
        let mut out = Vec::with_capacity(len as usize);
        for piece in file.pieces(offset, u64::from(len)) {
            match piece {
                Piece::Local(r) => out.extend(file.read_local(r)?),
                Piece::Base(r, base) => {
                    let key = file.key();
                    let cached = base_reader
                        .and_then(|m| m.lock().clone())
                        .filter(|rd| rd.etag() == base.etag && rd.key() == key);
                    let reader = cached.unwrap_or_else(|| {
                        let rd = Arc::new(FileReader::new(
                            self.store.clone(),
                            self.blocks.clone(),
                            key.clone(),
                            base.etag.clone(),
                            base.size,
                            self.config.readahead,
                        ));
                        if let Some(m) = base_reader {
                            *m.lock() = Some(rd.clone());
                        }
                        rd
                    });
                    let want = (r.end - r.start) as u32;
                    let got = reader
                        .read(r.start, want)
                        .await
                        .map_err(|e| self.fail(&format!("reading {key:?}"), e))?;
                    if got.len() != want as usize {
                        return Err(libc::EIO);
                    }
                    out.extend_from_slice(&got);
                }
            }
        }
        Ok(Bytes::from(out))
    }

    // -----------------------------------------------------------------
    // Files

    /// Creates and opens file `name` in `parent` (subtle case 2).
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<(Entry, u64)> {
        let writes = self.writes()?;
        let dir = self.checked_child_dir(parent, name)?;
        let key = format!("{}{name}", dir.key);
        let (id, staging_file) = writes.staging.create().map_err(io_errno)?;
        let meta = FileMeta {
            mode: libc::S_IFREG | (mode & 0o7777),
            uid,
            gid,
            ..FileMeta::default()
        };
        let file = Arc::new(DirtyFile::new(
            id,
            staging_file,
            key.clone(),
            None,
            false,
            meta,
            true,
        ));
        file.with(|st| st.handles = 1);
        let attr = EntryAttr {
            kind: EntryKind::File,
            size: 0,
            mtime: SystemTime::now(),
            perm: mode & 0o7777,
            uid,
            gid,
            etag: None,
        };
        let ino = self.inodes.lock().bind(
            parent,
            name,
            crate::fs::inode::Binding {
                key: key.clone(),
                attr: attr.clone(),
                source: AttrSource::Head,
                native_symlink: false,
                expires: Instant::now() + self.config.attr_ttl,
            },
        );
        let ino = ino.ino;
        if let Some(old) = writes.get(ino) {
            // The name was bound to a dirty file that is being replaced.
            old.with(|st| st.unlinked = true);
        }
        writes.insert(ino, file.clone());
        self.name_added(&dir.key, &key, None);
        self.hidden.lock().remove(&key);
        let fh = self.add_file_handle(
            ino,
            Handle::Staged {
                ino,
                file,
                writable: true,
                base: parking_lot::Mutex::new(None),
            },
        );
        Ok((
            Entry {
                ino,
                ttl: self.config.attr_ttl,
                attr: self.overlay(ino, attr),
            },
            fh,
        ))
    }

    /// Writes `data` at `offset` through handle `fh`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let handle = self.handle(fh)?;
        let Handle::Staged {
            file,
            writable: true,
            ..
        } = &*handle
        else {
            return Err(libc::EBADF);
        };
        let writes = self.writes()?;
        self.check_size(offset.saturating_add(data.len() as u64))?;
        let written = file.write(&writes.staging, offset, data)?;
        // Parts of a file written front to back upload while it is written.
        while let Some((part, upload_id)) =
            file.next_stream_part(writes.uploader.limits().part_size)
        {
            let (Some(fs), file) = (self.me.upgrade(), file.clone()) else {
                break;
            };
            tokio::spawn(async move {
                if let Some(writes) = &fs.writes {
                    writes
                        .uploader
                        .upload_stream_part(&file, part, upload_id)
                        .await;
                }
            });
        }
        Ok(written)
    }

    /// EFBIG for a file size the bucket cannot store: checked before
    /// anything changes, so the file stays as it was.
    fn check_size(&self, size: u64) -> FsResult<()> {
        if size > self.store.dialect().max_object_size {
            return Err(libc::EFBIG);
        }
        Ok(())
    }

    /// `fallocate` through handle `fh`. Object stores have no
    /// preallocation: mode 0 extends the size like a truncate up (sparse,
    /// so the staging disk is not reserved either), `FALLOC_FL_KEEP_SIZE`
    /// changes nothing; punching or collapsing holes is not supported.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
        self.check_size(end)?;
        let handle = self.handle(fh)?;
        let Handle::Staged {
            file,
            writable: true,
            ..
        } = &*handle
        else {
            return Err(libc::EBADF);
        };
        match mode {
            0 => {
                if end > file.size() {
                    file.truncate(&self.writes()?.staging, end)?;
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(libc::EOPNOTSUPP),
        }
    }

    /// `close` of a handle: stages what it wrote (subtle case 1).
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let Handle::Staged {
            ino,
            file,
            writable: true,
            ..
        } = &*handle
        else {
            return Ok(());
        };
        let sync_close = self.writes()?.config.sync_close;
        if !sync_close && file.is_new_and_empty() {
            // A shell redirect (`> f`) closes a duplicate of the new
            // file's descriptor before anything is written: an empty new
            // file is journaled here and uploaded at its last close
            // (release_hold), so it costs one PUT, not an empty one first.
            self.journal(file)?;
            return Ok(());
        }
        let generation = self.stage(file, Some(*ino))?;
        if sync_close {
            file.wait_uploaded(generation).await?;
        }
        Ok(())
    }

    /// `fsync`: stages and waits for the upload (subtle case 1).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let handle = self.handle(fh)?;
        let (ino, file) = match &*handle {
            Handle::Staged { ino, file, .. } => (*ino, file.clone()),
            Handle::File { ino, .. } => match self.staged(*ino) {
                Some(file) => (*ino, file),
                None => return Ok(()),
            },
            Handle::Dir(_) => return Ok(()),
        };
        let generation = self.stage(&file, Some(ino))?;
        let _ = self.writes()?.staging.sync_journal();
        file.wait_uploaded(generation).await
    }

    /// Journals the file's state and schedules its upload; returns the
    /// generation that upload will cover.
    pub(super) fn stage(&self, file: &Arc<DirtyFile>, ino: Option<u64>) -> FsResult<u64> {
        self.journal(file)?;
        self.schedule(file, ino);
        Ok(file.generation())
    }

    /// Writes the file's state to the staging journal (if it changed), so
    /// a restart uploads it.
    fn journal(&self, file: &Arc<DirtyFile>) -> FsResult<()> {
        let writes = self.writes()?;
        if let Some(record) = file.journal_record() {
            if let Err(e) = writes.staging.record(&Record::Staged(record)) {
                file.journal_failed();
                warn!(key = %file.key(), "cannot write the staging journal: {e}");
                return Err(io_errno(e));
            }
            if let Err(e) = writes
                .staging
                .compact_journal_if_large(|| writes.owed_records())
            {
                // The long journal stays valid; compaction is tried again.
                warn!("cannot compact the staging journal: {e}");
            }
        }
        Ok(())
    }

    /// The last handle of `ino` through `file` (if any) closed.
    pub(super) fn file_closed(&self, ino: u64, file: Option<&Arc<DirtyFile>>) {
        let last = {
            let mut open = self.open_files.lock();
            let count = open.entry(ino).or_insert(1);
            *count -= 1;
            let last = *count == 0;
            if last {
                open.remove(&ino);
            }
            last
        };
        if let Some(file) = file {
            self.release_hold(file, ino);
        }
        if last {
            let hidden_key = {
                let hidden = self.hidden.lock();
                hidden
                    .iter()
                    .find(|(_, i)| **i == ino)
                    .map(|(k, _)| k.clone())
            };
            if let (Some(key), Some(fs)) = (hidden_key, self.me.upgrade()) {
                tokio::spawn(async move { fs.deferred_delete(key, ino).await });
            }
        }
    }

    /// Deletes the object of a name removed while open (subtle case 3).
    async fn deferred_delete(&self, key: String, ino: u64) {
        if self.hidden.lock().get(&key) != Some(&ino) {
            return;
        }
        if let Err(e) = self.store.delete_object(&key).await {
            warn!("deleting {key:?} after its last close: {e}");
        }
        self.hidden.lock().remove(&key);
        self.name_removed(&key);
    }

    // -----------------------------------------------------------------
    // Attributes

    /// chmod, chown, utimens, truncate.
    pub async fn setattr(&self, ino: u64, set: SetAttr) -> FsResult<Entry> {
        let inode = self.inode(ino)?;
        self.writes()?;
        if let Some(size) = set.size {
            self.check_size(size)?;
        }
        let held = match inode.attr.kind {
            EntryKind::File => self.writes()?.get_held(ino),
            _ => None,
        };
        let held = match held {
            None if inode.attr.kind == EntryKind::File && set.size.is_some() => {
                Some(self.dirty_for(&inode, false).await?)
            }
            held => held,
        };
        if let Some(file) = held {
            let writes = self.writes()?;
            let truncated = match set.size {
                Some(size) => file.truncate(&writes.staging, size),
                None => Ok(()),
            };
            if truncated.is_ok()
                && (set.mode.is_some()
                    || set.uid.is_some()
                    || set.gid.is_some()
                    || set.mtime.is_some())
            {
                file.set_meta(|m| apply(m, &set));
            }
            // Staged here when no handle is open; else at their close.
            self.release_hold(&file, ino);
            truncated?;
            return self.getattr(ino).await;
        }
        if set.size.is_some() {
            return Err(match inode.attr.kind {
                EntryKind::Directory => libc::EISDIR,
                _ => libc::EINVAL,
            });
        }
        self.change_metadata(&inode, |m| apply(m, &set)).await?;
        self.getattr(ino).await
    }

    /// Replaces the metadata of the object behind a clean `inode` (subtle
    /// case 5), or of its dirty file.
    async fn change_metadata(&self, inode: &Inode, f: impl FnOnce(&mut FileMeta)) -> FsResult<()> {
        if let Some(file) = self.writes()?.get_held(inode.ino) {
            file.set_meta(f);
            let fits = fits(&file.with(|st| st.meta.clone()));
            self.release_hold(&file, inode.ino);
            return if fits { Ok(()) } else { Err(libc::ENOSPC) };
        }
        let key = inode.key.clone();
        let mode = type_bits(inode.attr.kind) | inode.attr.perm;
        let head = if key.is_empty() {
            // The bucket root has no object to carry metadata.
            return Err(libc::EPERM);
        } else {
            match self.store.head_object(&key).await {
                Ok(h) => Some(h),
                Err(StoreError::NoSuchKey { .. }) if inode.attr.kind == EntryKind::Directory => {
                    None
                }
                Err(e) => return Err(self.fail(&format!("HEAD {key:?}"), e)),
            }
        };
        let mut meta = match &head {
            Some(h) => from_metadata(&h.metadata, mode, inode.attr.uid, inode.attr.gid).0,
            None => own_meta(inode, mode),
        };
        if let Some(h) = &head
            && let Some(t) = h
                .metadata
                .get("mtime")
                .and_then(|v| crate::fs::namespace::parse_unix_time(v))
        {
            meta.mtime = Some(unix_time(t));
        }
        f(&mut meta);
        if !fits(&meta) {
            return Err(libc::ENOSPC);
        }
        let attributes = ObjectAttributes {
            content_type: head.as_ref().and_then(|h| h.content_type.clone()),
            metadata: to_metadata(&meta),
        };
        let result = match &head {
            Some(h) => self
                .store
                .copy_object(&CopyRequest {
                    source_key: key.clone(),
                    dest_key: key.clone(),
                    directive: MetadataDirective::Replace(attributes),
                    source_if_match: Some(h.etag.clone()),
                })
                .await
                .map(|_| ()),
            // An implicit directory gets a marker to carry its metadata.
            None => self
                .store
                .put_object(&PutRequest {
                    key: key.clone(),
                    body: Bytes::new(),
                    attributes,
                })
                .await
                .map(|_| ()),
        };
        result.map_err(|e| self.fail(&format!("changing the metadata of {key:?}"), e))?;
        match self.store.head_object(&key).await {
            Ok(h) => {
                let attr = attr_from_head(&key, &h, &self.config.defaults);
                self.inodes.lock().refresh(
                    inode.ino,
                    attr,
                    h.object_type == ObjectType::Symlink,
                    Instant::now() + self.config.attr_ttl,
                );
            }
            Err(e) => return Err(self.fail(&format!("HEAD {key:?}"), e)),
        }
        self.invalidate_listing(parent_prefix(&key));
        Ok(())
    }

    // -----------------------------------------------------------------
    // Namespace

    /// The directory `parent`, checked to take a new child `name`.
    fn checked_child_dir(&self, parent: u64, name: &str) -> FsResult<Inode> {
        if name.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if !valid_component(name) {
            return Err(libc::EINVAL);
        }
        self.dir_inode(parent)
    }

    /// The caches after `key` appeared in directory `dir`: no longer
    /// missing, and in the cached listing (`entry`, or nothing while the
    /// file is only staged here: lookups and readdir show staged files
    /// anyway). Keeping the listing keeps lookups of further new names
    /// free, so a file created and written costs its upload alone.
    pub(super) fn name_added(&self, dir: &str, key: &str, entry: Option<DirEntry>) {
        self.negatives
            .lock()
            .pop(key.strip_suffix('/').unwrap_or(key));
        self.listings.lock().update(dir, |listing| {
            if let Some(entry) = entry {
                listing.entries.insert(entry.name.clone(), entry);
            }
        });
    }

    /// The cached listing after the object `key` (a file, not a prefix)
    /// was deleted: its entry goes, unless a directory of that name hides
    /// it (then the entry is the directory's).
    pub(super) fn name_removed(&self, key: &str) {
        let (dir, name) = key.split_at(parent_prefix(key).len());
        self.listings.lock().update(dir, |listing| {
            if listing.entries.get(name).is_some_and(|e| e.key == key) {
                listing.entries.remove(name);
            }
        });
    }

    /// The entry a listing would show for object `key`, just written
    /// with `size` bytes and `etag`: a file with the mount's defaults
    /// (listings carry no metadata; a lookup HEADs it).
    fn listed_object(&self, key: &str, size: u64, etag: &str) -> DirEntry {
        let object = ListEntry {
            key: key.to_string(),
            size,
            etag: etag.to_string(),
            last_modified: Some(SystemTime::now()),
        };
        DirEntry {
            name: key[parent_prefix(key).len()..].to_string(),
            key: key.to_string(),
            attr: file_attr_from_listing(&object, &self.config.defaults),
        }
    }

    /// The cached listing after file `key` was uploaded as `base`.
    pub(super) fn file_listed(&self, key: &str, base: &BaseObject) {
        let (dir, name) = key.split_at(parent_prefix(key).len());
        let entry = self.listed_object(key, base.size, &base.etag);
        self.listings.lock().update(dir, |listing| {
            // A directory of the same name hides the file, as listed.
            if listing
                .entries
                .get(name)
                .is_none_or(|e| e.attr.kind != EntryKind::Directory)
            {
                listing.entries.insert(entry.name.clone(), entry);
            }
        });
    }

    /// The entry of `name` in `parent`, without counting a kernel lookup.
    /// A name the kernel looked up moments ago (its binding still within
    /// its TTL) is taken as bound, without a request: `rm -rf` of a
    /// directory just listed then costs one DELETE a file, not a HEAD too.
    async fn resolve(&self, parent: u64, name: &str) -> FsResult<Option<Entry>> {
        let bound = {
            let inodes = self.inodes.lock();
            inodes
                .child(parent, name)
                .filter(|i| i.expires > Instant::now())
                .map(|i| (i.ino, i.key.clone(), i.attr.clone()))
        };
        if let Some((ino, key, attr)) = bound
            && !self.hidden.lock().contains_key(&key)
        {
            let attr = self.overlay(ino, attr);
            return Ok(Some(Entry {
                ino,
                ttl: self.ttl_for(&attr),
                attr,
            }));
        }
        let entry = self.lookup(parent, name).await?;
        if let Some(e) = &entry {
            self.forget(e.ino, 1);
        }
        Ok(entry)
    }

    /// mkdir: a directory marker object `name/` with the s3fs metadata.
    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> FsResult<Entry> {
        let new = NewEntry {
            suffix: "/",
            body: Bytes::new(),
            kind: EntryKind::Directory,
            perm: mode & 0o7777,
            uid,
            gid,
        };
        self.put_entry(parent, name, new).await
    }

    /// symlink, stored the s3fs way: body = target, mode with S_IFLNK.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        uid: u32,
        gid: u32,
    ) -> FsResult<Entry> {
        let new = NewEntry {
            suffix: "",
            body: Bytes::copy_from_slice(target.as_bytes()),
            kind: EntryKind::Symlink,
            perm: 0o777,
            uid,
            gid,
        };
        self.put_entry(parent, name, new).await
    }

    /// Creates the object of a new directory or symlink as `name` in
    /// `parent`, with its s3fs metadata, and binds it.
    async fn put_entry(&self, parent: u64, name: &str, new: NewEntry) -> FsResult<Entry> {
        self.writes()?;
        let dir = self.checked_child_dir(parent, name)?;
        let key = format!("{}{name}{}", dir.key, new.suffix);
        let meta = FileMeta {
            mode: type_bits(new.kind) | new.perm,
            uid: new.uid,
            gid: new.gid,
            ..FileMeta::default()
        };
        let size = match new.kind {
            EntryKind::Directory => 0,
            _ => new.body.len() as u64,
        };
        let put = self
            .store
            .put_object(&PutRequest {
                key: key.clone(),
                body: new.body,
                attributes: ObjectAttributes {
                    content_type: None,
                    metadata: to_metadata(&meta),
                },
            })
            .await
            .map_err(|e| self.fail(&format!("creating {key:?}"), e))?;
        let attr = EntryAttr {
            kind: new.kind,
            size,
            mtime: SystemTime::now(),
            perm: new.perm,
            uid: new.uid,
            gid: new.gid,
            etag: Some(put.etag),
        };
        // As a listing would show it: a directory with the defaults, a
        // symlink as a file.
        let entry = match new.kind {
            EntryKind::Directory => DirEntry {
                name: name.to_string(),
                key: key.clone(),
                attr: implicit_dir_attr(&self.config.defaults),
            },
            _ => self.listed_object(&key, size, attr.etag.as_deref().unwrap_or_default()),
        };
        self.name_added(&dir.key, &key, Some(entry));
        if new.kind == EntryKind::Directory {
            // A new directory is empty: lookups in it need no request.
            self.listings.lock().put(
                &key,
                Arc::new(Listing::default()),
                Instant::now(),
                self.config.dir_ttl,
            );
        }
        Ok(self.bind(parent, name, key, attr, AttrSource::Head, false))
    }

    /// Whether directory `prefix` (of inode `ino`) has no child at all.
    async fn dir_is_empty(&self, ino: u64, prefix: &str) -> FsResult<bool> {
        if !self.staged_children(ino).is_empty() {
            return Ok(false);
        }
        let page = self
            .store
            .list_objects(&ListRequest {
                prefix: prefix.to_string(),
                delimiter: None,
                continuation: None,
                start_after: None,
                max_keys: Some(2),
            })
            .await
            .map_err(|e| self.fail(&format!("listing {prefix:?}"), e))?;
        Ok(page.objects.iter().all(|o| o.key == prefix) && page.common_prefixes.is_empty())
    }

    /// rmdir: ENOTEMPTY while anything lies under the prefix (implicit
    /// children included); deletes the marker.
    pub async fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.writes()?;
        let entry = self.resolve(parent, name).await?.ok_or(libc::ENOENT)?;
        if entry.attr.kind != EntryKind::Directory {
            return Err(libc::ENOTDIR);
        }
        let prefix = self.inode(entry.ino)?.key;
        if !self.dir_is_empty(entry.ino, &prefix).await? {
            return Err(libc::ENOTEMPTY);
        }
        self.store
            .delete_object(&prefix)
            .await
            .map_err(|e| self.fail(&format!("rmdir {prefix:?}"), e))?;
        self.inodes.lock().unbind(parent, name);
        self.invalidate_listing(&prefix);
        self.invalidate_listing(parent_prefix(&prefix));
        self.remember_missing(&prefix);
        Ok(())
    }

    /// Caches `key` (or directory prefix) as missing.
    fn remember_missing(&self, key: &str) {
        self.negatives.lock().put(
            key.strip_suffix('/').unwrap_or(key).to_string(),
            Instant::now() + self.config.negative_ttl,
        );
    }

    /// unlink (subtle case 3).
    pub async fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        let writes = self.writes()?;
        let entry = self.resolve(parent, name).await?.ok_or(libc::ENOENT)?;
        if entry.attr.kind == EntryKind::Directory {
            return Err(libc::EISDIR);
        }
        let key = self.inode(entry.ino)?.key;
        if let Some(file) = self.staged(entry.ino) {
            let _running = file.upload_lock.lock().await;
            file.with(|st| st.unlinked = true);
            let _ = writes.staging.record(&Record::Dropped { id: file.id });
        }
        let open = self.open_files.lock().get(&entry.ino).copied().unwrap_or(0) > 0;
        if open {
            self.hidden.lock().insert(key.clone(), entry.ino);
        } else {
            self.store
                .delete_object(&key)
                .await
                .map_err(|e| self.fail(&format!("unlink {key:?}"), e))?;
            if let Some(file) = self.staged(entry.ino) {
                self.retire(&file, Some(entry.ino));
            }
        }
        self.inodes.lock().unbind(parent, name);
        self.name_removed(&key);
        self.remember_missing(&key);
        Ok(())
    }

    /// rename (subtle case 4). `flags` are renameat2's.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: u32,
    ) -> FsResult<()> {
        self.writes()?;
        if flags & (libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT) != 0 {
            warn!(
                "rename of {name:?} with RENAME_EXCHANGE or RENAME_WHITEOUT: not supported by an object store"
            );
            return Err(libc::EINVAL);
        }
        let new_dir = self.checked_child_dir(new_parent, new_name)?;
        let src = self.resolve(parent, name).await?.ok_or(libc::ENOENT)?;
        let dst = self.resolve(new_parent, new_name).await?;
        if dst.is_some() && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(libc::EEXIST);
        }
        if dst.as_ref().is_some_and(|d| d.ino == src.ino) {
            return Ok(());
        }
        let src_inode = self.inode(src.ino)?;
        let to_key = match src.attr.kind {
            EntryKind::Directory => {
                let to = format!("{}{new_name}/", new_dir.key);
                self.rename_dir(&src_inode, dst.as_ref(), &to).await?;
                to
            }
            _ => {
                if dst
                    .as_ref()
                    .is_some_and(|d| d.attr.kind == EntryKind::Directory)
                {
                    return Err(libc::EISDIR);
                }
                let to = format!("{}{new_name}", new_dir.key);
                if let Some(d) = &dst
                    && let Some(file) = self.staged(d.ino)
                {
                    // The replaced file's staged data must not be uploaded.
                    let _running = file.upload_lock.lock().await;
                    file.with(|st| st.unlinked = true);
                    let _ = self
                        .writes()?
                        .staging
                        .record(&Record::Dropped { id: file.id });
                }
                self.rename_file(&src_inode, &to).await?;
                to
            }
        };
        self.inodes
            .lock()
            .move_to(src.ino, new_parent, new_name, to_key.clone());
        self.invalidate_listing(parent_prefix(&src_inode.key));
        self.invalidate_listing(parent_prefix(&to_key));
        self.remember_missing(&src_inode.key);
        self.negatives
            .lock()
            .pop(to_key.strip_suffix('/').unwrap_or(&to_key));
        Ok(())
    }

    /// Renames a file or symlink object to `to` and sets the inode's key.
    async fn rename_file(&self, inode: &Inode, to: &str) -> FsResult<()> {
        let from = inode.key.clone();
        let staged = self.staged(inode.ino);
        let Some(file) = staged else {
            return self.move_object(&from, to, inode.attr.size).await;
        };
        let writes = self.writes()?;
        let _running = file.upload_lock.lock().await;
        if file.with(|st| st.base.is_none()) && !file.is_clean() {
            // Never uploaded: only the name changes (no request).
            file.with(|st| st.key = to.to_string());
            file.force_journal();
            self.stage(&file, Some(inode.ino))?;
        } else {
            // Make the object current, then move it.
            if let Some(snap) = file.begin_upload() {
                match writes.uploader.upload(&file, &snap).await {
                    Ok(base) => {
                        file.finish_upload(snap.generation, base);
                        let _ = writes.staging.record(&Record::Uploaded {
                            id: file.id,
                            generation: snap.generation,
                        });
                    }
                    Err(e) => {
                        let code = crate::errno::errno(&e);
                        file.fail_upload(snap.generation, code);
                        return Err(self.fail(&format!("uploading {from:?} before renaming it"), e));
                    }
                }
            }
            self.move_object(&from, to, file.size()).await?;
            match self.store.head_object(to).await {
                Ok(h) => file.set_base(crate::fs::write::base_of(&h)),
                Err(e) => return Err(self.fail(&format!("HEAD {to:?}"), e)),
            }
            file.with(|st| st.key = to.to_string());
            file.force_journal();
        }
        Ok(())
    }

    /// Moves one object: native rename, else copy (multipart above
    /// [`SINGLE_COPY_MAX`]) and delete.
    async fn move_object(&self, from: &str, to: &str, size: u64) -> FsResult<()> {
        let caps = self.store.dialect().capabilities;
        let what = || format!("renaming {from:?} to {to:?}");
        if caps.native_rename_file {
            // A native rename refuses an existing destination.
            let _ = self.store.delete_object(to).await;
            return self
                .store
                .rename_object(from, to)
                .await
                .map_err(|e| self.fail(&what(), e));
        }
        self.copy_object(from, to, size)
            .await
            .map_err(|e| self.fail(&what(), e))?;
        self.store
            .delete_object(from)
            .await
            .map_err(|e| self.fail(&what(), e))
    }

    /// Server-side copy of `from` to `to` (no data through the client).
    async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<(), StoreError> {
        if size <= SINGLE_COPY_MAX {
            return self
                .store
                .copy_object(&CopyRequest {
                    source_key: from.to_string(),
                    dest_key: to.to_string(),
                    directive: MetadataDirective::Copy,
                    source_if_match: None,
                })
                .await
                .map(|_| ());
        }
        let head = self.store.head_object(from).await?;
        let upload_id = self
            .store
            .create_multipart_upload(
                to,
                &ObjectAttributes {
                    content_type: head.content_type.clone(),
                    metadata: head.metadata.clone(),
                },
            )
            .await?;
        // 1 GiB parts (within 5 MiB..5 GiB), bigger if 10,000 would not do.
        let piece = (1u64 << 30)
            .max(size.div_ceil(MAX_PARTS))
            .clamp(MIN_PART, MAX_PART);
        let mut parts = Vec::new();
        let mut result = Ok(());
        for (i, start) in (0..size).step_by(piece as usize).enumerate() {
            let copied = self
                .store
                .upload_part_copy(&UploadPartCopyRequest {
                    key: to.to_string(),
                    upload_id: upload_id.clone(),
                    part_number: i as u32 + 1,
                    source_key: from.to_string(),
                    source_range: Some(start..(start + piece).min(size)),
                    source_if_match: Some(head.etag.clone()),
                })
                .await;
            match copied {
                Ok(p) => parts.push(p),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = self
                .store
                .complete_multipart_upload(&CompleteMultipartRequest {
                    key: to.to_string(),
                    upload_id: upload_id.clone(),
                    parts,
                })
                .await
                .map(|_| ());
        }
        if result.is_err() {
            let _ = self.store.abort_multipart_upload(to, &upload_id).await;
        }
        result
    }

    /// Renames directory `dir` to prefix `to`, replacing the empty
    /// directory `dst` if given.
    async fn rename_dir(&self, dir: &Inode, dst: Option<&Entry>, to: &str) -> FsResult<()> {
        let from = dir.key.clone();
        if from.is_empty() || to.starts_with(&from) {
            return Err(libc::EINVAL);
        }
        if let Some(d) = dst {
            if d.attr.kind != EntryKind::Directory {
                return Err(libc::ENOTDIR);
            }
            if !self.dir_is_empty(d.ino, to).await? {
                return Err(libc::ENOTEMPTY);
            }
            let _ = self.store.delete_object(to).await;
        }
        self.flush_under(&from).await?;
        let caps = self.store.dialect().capabilities;
        if caps.native_rename_dir {
            self.store
                .rename_object(&from, to)
                .await
                .map_err(|e| self.fail(&format!("renaming {from:?} to {to:?}"), e))?;
        } else {
            self.copy_tree(&from, to).await?;
        }
        self.inodes.lock().rekey_under(&from, to);
        if let Some(writes) = &self.writes {
            for (_, file) in writes.all() {
                file.with(|st| {
                    if let Some(rest) = st.key.strip_prefix(&from) {
                        st.key = format!("{to}{rest}");
                    }
                });
            }
        }
        self.listings
            .lock()
            .invalidate_where(|k| k.starts_with(&from) || k.starts_with(to));
        info!("renamed directory {from:?} to {to:?}");
        Ok(())
    }

    /// Waits until no file under `prefix` has staged changes.
    async fn flush_under(&self, prefix: &str) -> FsResult<()> {
        let Some(writes) = &self.writes else {
            return Ok(());
        };
        for (ino, file) in writes.all() {
            if file.key().starts_with(prefix) && !file.with(|st| st.unlinked) {
                let generation = self.stage(&file, Some(ino))?;
                file.wait_uploaded(generation).await?;
            }
        }
        Ok(())
    }

    /// Copies every key under `from` to the same name under `to`, then
    /// deletes the originals: only once every copy succeeded, so a failure
    /// leaves the source whole.
    async fn copy_tree(&self, from: &str, to: &str) -> FsResult<()> {
        let mut keys = Vec::new();
        let mut continuation = None;
        loop {
            let page = self
                .store
                .list_objects(&ListRequest {
                    prefix: from.to_string(),
                    delimiter: None,
                    continuation: continuation.take(),
                    start_after: None,
                    max_keys: None,
                })
                .await
                .map_err(|e| self.fail(&format!("listing {from:?}"), e))?;
            keys.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
            match page.next {
                Some(next) => continuation = Some(next),
                None => break,
            }
        }
        let Some(fs) = self.me.upgrade() else {
            return Err(libc::EIO);
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(RENAME_PARALLELISM));
        let mut tasks = tokio::task::JoinSet::new();
        for (key, size) in &keys {
            let dest = format!("{to}{}", &key[from.len()..]);
            let (fs, key, size) = (fs.clone(), key.clone(), *size);
            let permit = limit.clone().acquire_owned().await.map_err(|_| libc::EIO)?;
            tasks.spawn(async move {
                let _permit = permit;
                fs.copy_object(&key, &dest, size)
                    .await
                    .map_err(|e| fs.fail(&format!("copying {key:?} to {dest:?}"), e))
            });
        }
        let mut failed = None;
        while let Some(done) = tasks.join_next().await {
            if let Err(code) = done.map_err(|_| libc::EIO).and_then(|r| r) {
                failed = Some(code);
            }
        }
        if let Some(code) = failed {
            return Err(code);
        }
        let old: Vec<String> = keys.into_iter().map(|(k, _)| k).collect();
        for batch in old.chunks(DELETE_BATCH_MAX) {
            let result = self
                .store
                .delete_objects(batch)
                .await
                .map_err(|e| self.fail(&format!("deleting the old keys of {from:?}"), e))?;
            if let Some(err) = result.errors.first() {
                warn!(
                    "renaming {from:?}: {} old keys not deleted (first: {:?}, {})",
                    result.errors.len(),
                    err.key,
                    err.code
                );
                return Err(libc::EIO);
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------
    // Extended attributes (subtle case 6)

    /// The `user.*` attributes of `ino`.
    async fn xattrs(&self, ino: u64) -> FsResult<std::collections::BTreeMap<String, Vec<u8>>> {
        if let Some(file) = self.staged(ino) {
            return Ok(file.with(|st| st.meta.xattrs.clone()));
        }
        let inode = self.inode(ino)?;
        if inode.key.is_empty() {
            return Ok(Default::default());
        }
        match self.store.head_object(&inode.key).await {
            Ok(h) => Ok(from_metadata(&h.metadata, 0, 0, 0).0.xattrs),
            Err(StoreError::NoSuchKey { .. }) => Ok(Default::default()),
            Err(e) => Err(self.fail(&format!("HEAD {:?}", inode.key), e)),
        }
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> FsResult<Vec<u8>> {
        if ino == crate::fs::inode::ROOT_INO && name == crate::fs::stats::STATS_XATTR {
            let stats = serde_json::to_vec(&self.stats()).map_err(|_| libc::EIO)?;
            return Ok(stats);
        }
        if !name.starts_with("user.") {
            return Err(libc::ENOTSUP);
        }
        self.xattrs(ino).await?.remove(name).ok_or(libc::ENODATA)
    }

    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<String>> {
        Ok(self.xattrs(ino).await?.into_keys().collect())
    }

    /// setxattr; `flags` are XATTR_CREATE / XATTR_REPLACE.
    pub async fn setxattr(&self, ino: u64, name: &str, value: &[u8], flags: i32) -> FsResult<()> {
        self.writes()?;
        if !name.starts_with("user.") || name.len() <= "user.".len() {
            return Err(libc::ENOTSUP);
        }
        let present = self.xattrs(ino).await?.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && present {
            return Err(libc::EEXIST);
        }
        if flags & libc::XATTR_REPLACE != 0 && !present {
            return Err(libc::ENODATA);
        }
        let inode = self.inode(ino)?;
        let (name, value) = (name.to_string(), value.to_vec());
        self.change_metadata(&inode, |m| {
            m.xattrs.insert(name, value);
        })
        .await
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> FsResult<()> {
        self.writes()?;
        if !name.starts_with("user.") {
            return Err(libc::ENOTSUP);
        }
        if !self.xattrs(ino).await?.contains_key(name) {
            return Err(libc::ENODATA);
        }
        let inode = self.inode(ino)?;
        let name = name.to_string();
        self.change_metadata(&inode, |m| {
            m.xattrs.remove(&name);
        })
        .await
    }
}

/// The metadata of `inode` when its object has none of its own (or there
/// is no object): its mode and owner as shown.
fn own_meta(inode: &Inode, mode: u32) -> FileMeta {
    FileMeta {
        mode,
        uid: inode.attr.uid,
        gid: inode.attr.gid,
        ..FileMeta::default()
    }
}

/// Applies the metadata part of `set` to `meta`.
fn apply(meta: &mut FileMeta, set: &SetAttr) {
    if let Some(mode) = set.mode {
        meta.mode = (meta.mode & libc::S_IFMT) | (mode & 0o7777);
    }
    if let Some(uid) = set.uid {
        meta.uid = uid;
    }
    if let Some(gid) = set.gid {
        meta.gid = gid;
    }
    if let Some(t) = set.mtime {
        meta.mtime = Some(unix_time(t));
    }
}

/// Whether `meta` fits in the user metadata an object may carry.
fn fits(meta: &FileMeta) -> bool {
    let bytes: usize = to_metadata(meta)
        .iter()
        .map(|(k, v)| "x-amz-meta-".len() + k.len() + v.len())
        .sum();
    bytes <= USER_METADATA_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_prefixes() {
        assert_eq!(parent_prefix("a/b/c"), "a/b/");
        assert_eq!(parent_prefix("a/b/"), "a/");
        assert_eq!(parent_prefix("top"), "");
        assert_eq!(parent_prefix("top/"), "");
    }
}
