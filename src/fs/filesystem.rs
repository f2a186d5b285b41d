//! The filesystem core: POSIX calls on inodes and handles, answered from the
//! caches or the object store. Async and FUSE-free: the adapter in
//! `fuse.rs` decodes requests, calls these methods in Tokio tasks and
//! replies with what they return (an errno on failure).
//!
//! Subtle cases:
//! 1. **Listings fill attributes.** A directory is listed page by page
//!    (delimiter `/`) into a [`Listing`] cached for `dir_ttl` in a cache
//!    bounded by entries (`listing_cache_entries`); readdir and READDIRPLUS
//!    answer from it a window at a time (readdir.rs), and lookups of names in a fresh listing
//!    need no request for directories and no LIST for files. `ls -l` of N
//!    objects therefore costs ceil(N/1000) LISTs and no HEAD.
//! 2. **Lookup of an unknown name** runs a HEAD of `key` and a one-key LIST
//!    of `key/` side by side ([`resolve_lookup`]); a name absent from a
//!    fresh listing of its parent is missing without any request; a
//!    directory whose expired listing was one page is listed again
//!    instead (one request that serves the next lookups too). Misses
//!    are remembered for `negative_ttl` in a bounded LRU.
//! 3. **Files found in a listing carry no metadata** (mode, owner, symlink
//!    type): a lookup of such a file HEADs it, so `stat path` shows the
//!    s3fs-compatible metadata; entries handed out by READDIRPLUS show the
//!    listing's attributes until their TTL ends (README, Decisions).
//! 4. **Open pins a version.** A file is opened at the ETag and size of its
//!    attributes while they are fresh (else after a HEAD); the reader then
//!    refuses other versions (reader.rs, case 1), so an object replaced
//!    between listing and open fails the first read with ESTALE.
//! 5. **No lock across I/O.** The inode table, caches and handle map sit
//!    behind `parking_lot` mutexes taken for map operations only.
//! 6. **Page cache across opens.** The kernel drops a file's cached pages
//!    at each open unless told to keep them; they are kept when the file is
//!    opened at the same ETag as the last time, so re-reading an unchanged
//!    file costs no request, and a changed one is never served stale pages.
//! 7. **Logged once.** Keys that cannot be shown (invalid names, files
//!    shadowed by a directory) are logged the first time a listing meets
//!    them; a bounded set remembers which were logged.

use crate::cache::block::BlockCache;
use crate::cache::readahead::ReadaheadConfig;
use crate::errno::errno;
use crate::fs::inode::{AttrSource, Binding, Inode, InodeTable, ROOT_INO};
use crate::fs::listing_cache::{CollectBudget, ListingCache};
use crate::fs::namespace::{
    AttrDefaults, EntryAttr, EntryKind, Listing, NAME_MAX, attr_from_head, implicit_dir_attr,
    resolve_lookup, valid_component,
};
use crate::fs::reader::FileReader;
use crate::fs::write::Writes;
use crate::fs::write::dirty::DirtyFile;
use crate::store::{GetRequest, ListRequest, ObjectStore, ObjectType, StoreError};
use lru::LruCache;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

mod readdir;
mod uploads;
mod write_ops;

pub use readdir::DirWindow;

pub use write_ops::SetAttr;

/// Errors of the core are errno values, ready for the kernel.
pub type Errno = i32;
pub type FsResult<T> = Result<T, Errno>;

/// Longest symlink target read (PATH_MAX): a bigger "symlink" object is not
/// one, and reading it whole would be unbounded.
const MAX_SYMLINK_TARGET: u64 = 4096;

/// How many missing names are remembered (each a key string).
const NEGATIVE_CACHE_ENTRIES: usize = 16_384;

/// How many logged keys are remembered to avoid repeating a log line.
const LOGGED_KEYS: usize = 4096;

/// Tuning of the core, from the mount options.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Key prefix of the root: empty or ending in `/`.
    pub root_prefix: String,
    pub defaults: AttrDefaults,
    /// Bits removed from every mode reported.
    pub umask: u32,
    pub attr_ttl: Duration,
    pub dir_ttl: Duration,
    pub negative_ttl: Duration,
    /// Entries of directory listings kept, all directories together.
    pub listing_cache_entries: usize,
    pub readahead: ReadaheadConfig,
    /// Let the kernel cache file pages (`kernel_cache` option); otherwise
    /// reads bypass the page cache and are served from the block cache
    /// (see `fs::fuse`, subtle case 5).
    pub kernel_cache: bool,
}

/// A name resolved to an inode, for the kernel.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ino: u64,
    pub attr: EntryAttr,
    /// How long the kernel may trust it.
    pub ttl: Duration,
}

/// One row of a directory read, in offset order (`.` and `..` first).
#[derive(Clone, Debug)]
pub struct DirRow {
    pub name: String,
    /// For `.`/`..` the inode; for children 0 until READDIRPLUS binds them.
    pub ino: u64,
    pub kind: EntryKind,
    /// The child's key and attributes (children only).
    pub child: Option<(String, EntryAttr)>,
}

enum Handle {
    /// A read-only handle of a file with nothing staged when it was opened.
    File { ino: u64, reader: Arc<FileReader> },
    /// A handle through the file's staged data (any handle opened for
    /// writing, and read handles of a file being written).
    Staged {
        ino: u64,
        file: Arc<DirtyFile>,
        writable: bool,
        /// Reads of unchanged ranges, pinned to the base they come from.
        base: Mutex<Option<Arc<FileReader>>>,
    },
    /// An open directory: its current pass (readdir.rs).
    Dir(tokio::sync::Mutex<Option<readdir::DirPass>>),
}

/// The filesystem. Shared by all FUSE worker tasks behind an `Arc`.
pub struct BucketFs {
    /// This filesystem, for the tasks it spawns (uploads).
    me: Weak<BucketFs>,
    store: Arc<dyn ObjectStore>,
    blocks: Arc<BlockCache>,
    config: FsConfig,
    inodes: Mutex<InodeTable>,
    listings: Mutex<ListingCache>,
    collect_budget: CollectBudget,
    negatives: Mutex<LruCache<String, Instant>>,
    logged: Mutex<LruCache<String, ()>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    /// The write path; `None` on a read-only mount.
    writes: Option<Writes>,
    /// Open file handles per inode (unlink of an open file waits for the
    /// last close to delete the object).
    open_files: Mutex<HashMap<u64, usize>>,
    /// Keys whose name was removed while open: hidden from listings until
    /// the object is deleted at the last close.
    hidden: Mutex<HashMap<String, u64>>,
    started: Instant,
}

impl std::fmt::Debug for BucketFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketFs")
            .field("bucket", &self.store.bucket())
            .field("root_prefix", &self.config.root_prefix)
            .finish_non_exhaustive()
    }
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl BucketFs {
    /// The filesystem over `store`; `writes` is `None` for a read-only
    /// mount.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        blocks: Arc<BlockCache>,
        config: FsConfig,
        writes: Option<Writes>,
    ) -> Arc<BucketFs> {
        let root_attr = implicit_dir_attr(&config.defaults);
        Arc::new_cyclic(|me| BucketFs {
            me: me.clone(),
            writes,
            open_files: Mutex::new(HashMap::new()),
            hidden: Mutex::new(HashMap::new()),
            started: Instant::now(),
            inodes: Mutex::new(InodeTable::new(&config.root_prefix, root_attr)),
            listings: Mutex::new(ListingCache::new(config.listing_cache_entries)),
            collect_budget: CollectBudget::new(config.listing_cache_entries),
            negatives: Mutex::new(LruCache::new(nonzero(NEGATIVE_CACHE_ENTRIES))),
            logged: Mutex::new(LruCache::new(nonzero(LOGGED_KEYS))),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            store,
            blocks,
            config,
        })
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// The permission bits reported for `attr` (umask applied).
    pub fn perm(&self, attr: &EntryAttr) -> u16 {
        (attr.perm & !self.config.umask & 0o7777) as u16
    }

    /// The TTL the kernel gets for an entry of this kind.
    pub fn ttl_for(&self, attr: &EntryAttr) -> Duration {
        match attr.kind {
            EntryKind::Directory => self.config.dir_ttl,
            _ => self.config.attr_ttl,
        }
    }

    fn inode(&self, ino: u64) -> FsResult<Inode> {
        self.inodes.lock().get(ino).cloned().ok_or(libc::ENOENT)
    }

    fn dir_inode(&self, ino: u64) -> FsResult<Inode> {
        let inode = self.inode(ino)?;
        if inode.attr.kind != EntryKind::Directory {
            return Err(libc::ENOTDIR);
        }
        Ok(inode)
    }

    /// Logs `err` for `what` and returns its errno.
    fn fail(&self, what: &str, err: StoreError) -> Errno {
        let code = errno(&err);
        match &err {
            StoreError::NoSuchKey { .. } => debug!("{what}: {err}"),
            _ => warn!("{what}: {err}"),
        }
        code
    }

    fn log_once(&self, key: &str, message: impl FnOnce() -> String) {
        let mut logged = self.logged.lock();
        if logged.put(key.to_string(), ()).is_none() {
            drop(logged);
            warn!("{}", message());
        }
    }

    // -----------------------------------------------------------------
    // Listings

    /// Forgets the cached listing of directory `prefix` (its content
    /// changed).
    fn invalidate_listing(&self, prefix: &str) {
        self.listings.lock().invalidate(prefix);
    }

    // -----------------------------------------------------------------
    // Namespace

    /// Resolves `name` in directory `parent` and counts one kernel lookup.
    /// `Ok(None)` is a miss the kernel may cache for `negative_ttl`.
    pub async fn lookup(&self, parent: u64, name: &str) -> FsResult<Option<Entry>> {
        if name.len() > NAME_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if !valid_component(name) {
            return Ok(None);
        }
        let dir = self.dir_inode(parent)?;
        let key = format!("{}{name}", dir.key);
        // The write path's own state wins over the bucket's: a file created
        // or being written here, a name removed while still open.
        if let Some(entry) = self.staged_entry(parent, name) {
            return Ok(Some(entry));
        }
        if self.hidden.lock().contains_key(&key) {
            return Ok(None);
        }
        self.await_recovered(&key).await;
        if let Some(until) = self.negatives.lock().get(&key)
            && *until > Instant::now()
        {
            return Ok(None);
        }

        let listing = self.listings.lock().fresh(&dir.key);
        let listing = match listing {
            Some(listing) => Some(listing),
            None => self.relist_small(&dir.key).await?,
        };
        let found = match listing {
            Some(listing) => match listing.entries.get(name) {
                None => None,
                Some(e) if e.attr.kind == EntryKind::Directory => {
                    Some((e.key.clone(), e.attr.clone(), AttrSource::Listing, false))
                }
                // Case 3: the listing lacks the metadata.
                Some(e) => match self.store.head_object(&e.key).await {
                    Ok(meta) => Some((
                        e.key.clone(),
                        attr_from_head(&e.key, &meta, &self.config.defaults),
                        AttrSource::Head,
                        meta.object_type == ObjectType::Symlink,
                    )),
                    Err(StoreError::NoSuchKey { .. }) => None,
                    Err(err) => return Err(self.fail(&format!("HEAD {:?}", e.key), err)),
                },
            },
            None => {
                let under = ListRequest {
                    prefix: format!("{key}/"),
                    delimiter: Some("/".into()),
                    continuation: None,
                    start_after: None,
                    max_keys: Some(1),
                };
                let (head, listed) = tokio::join!(
                    self.store.head_object(&key),
                    self.store.list_objects(&under)
                );
                let native = head
                    .as_ref()
                    .is_ok_and(|m| m.object_type == ObjectType::Symlink);
                match resolve_lookup(&key, head, listed, &self.config.defaults) {
                    Ok(Some(found)) => {
                        let source = match found.attr.kind {
                            EntryKind::Directory => AttrSource::Listing,
                            _ => AttrSource::Head,
                        };
                        Some((found.key, found.attr, source, native))
                    }
                    Ok(None) => None,
                    Err(err) => return Err(self.fail(&format!("lookup of {key:?}"), err)),
                }
            }
        };

        let Some((key, attr, source, native_symlink)) = found else {
            self.negatives
                .lock()
                .put(key, Instant::now() + self.config.negative_ttl);
            return Ok(None);
        };
        Ok(Some(self.bind(
            parent,
            name,
            key,
            attr,
            source,
            native_symlink,
        )))
    }

    /// Lists again a directory whose expired listing was one page (one
    /// request instead of the HEAD and LIST of a lookup, and the answer
    /// serves the lookups after it: creating many files in a directory
    /// costs a LIST per `dir_ttl`, not two requests per file). `None` when
    /// the directory was not cached, has grown past a page, or changed
    /// meanwhile.
    async fn relist_small(&self, prefix: &str) -> FsResult<Option<Arc<Listing>>> {
        let entries = self.listings.lock().expired_entries(prefix);
        if entries.is_none_or(|n| n >= readdir::WINDOW) {
            return Ok(None);
        }
        let began = Instant::now();
        let (page, listing) = self.list_page(prefix, None, None).await?;
        if page.next.is_some() {
            return Ok(None);
        }
        let listing = Arc::new(listing);
        let kept = self
            .listings
            .lock()
            .put(prefix, listing.clone(), began, self.config.dir_ttl);
        Ok(kept.then_some(listing))
    }

    fn bind(
        &self,
        parent: u64,
        name: &str,
        key: String,
        attr: EntryAttr,
        source: AttrSource,
        native_symlink: bool,
    ) -> Entry {
        let ttl = self.ttl_for(&attr);
        let inode = self.inodes.lock().bind(
            parent,
            name,
            Binding {
                key,
                attr,
                source,
                native_symlink,
                expires: Instant::now() + ttl,
            },
        );
        Entry {
            ino: inode.ino,
            ttl: self.ttl_for(&inode.attr),
            attr: self.overlay(inode.ino, inode.attr),
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.lock().forget(ino, n);
    }

    /// Attributes of `ino`, refreshed by a HEAD once a file's have expired.
    pub async fn getattr(&self, ino: u64) -> FsResult<Entry> {
        let inode = self.inode(ino)?;
        if self.staged(ino).is_some() {
            return Ok(Entry {
                ino,
                attr: self.overlay(ino, inode.attr),
                ttl: self.config.attr_ttl,
            });
        }
        if inode.attr.kind == EntryKind::Directory || inode.expires > Instant::now() {
            let ttl = if inode.attr.kind == EntryKind::Directory {
                self.config.dir_ttl
            } else {
                inode
                    .expires
                    .saturating_duration_since(Instant::now())
                    .min(self.config.attr_ttl)
            };
            return Ok(Entry {
                ino,
                attr: inode.attr,
                ttl,
            });
        }
        let attr = self.refresh(&inode).await?;
        Ok(Entry {
            ino,
            ttl: self.config.attr_ttl,
            attr,
        })
    }

    /// HEADs a file or symlink inode and stores what it found.
    async fn refresh(&self, inode: &Inode) -> FsResult<EntryAttr> {
        let meta = self
            .store
            .head_object(&inode.key)
            .await
            .map_err(|e| self.fail(&format!("HEAD {:?}", inode.key), e))?;
        let attr = attr_from_head(&inode.key, &meta, &self.config.defaults);
        self.inodes.lock().refresh(
            inode.ino,
            attr.clone(),
            meta.object_type == ObjectType::Symlink,
            Instant::now() + self.config.attr_ttl,
        );
        Ok(attr)
    }

    /// The target of a symlink.
    pub async fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        if inode.attr.kind != EntryKind::Symlink {
            return Err(libc::EINVAL);
        }
        if inode.native_symlink {
            return self
                .store
                .get_symlink(&inode.key)
                .await
                .map(String::into_bytes)
                .map_err(|e| self.fail(&format!("GetSymlink {:?}", inode.key), e));
        }
        // s3fs family: the body is the target.
        if inode.attr.size > MAX_SYMLINK_TARGET {
            warn!(
                "symlink object {:?} is {} bytes, longer than a path can be",
                inode.key, inode.attr.size
            );
            return Err(libc::EIO);
        }
        let got = self
            .store
            .get_object(&GetRequest {
                key: inode.key.clone(),
                range: None,
                if_match: inode.attr.etag.clone(),
            })
            .await
            .map_err(|e| self.fail(&format!("GET {:?}", inode.key), e))?;
        Ok(got.body.to_vec())
    }

    // -----------------------------------------------------------------
    // Directories

    // -----------------------------------------------------------------
    // Files

    /// Opens file `ino` with the open(2) `flags`. A read-only open of a
    /// file with nothing staged is pinned to one version (case 4); any
    /// other open goes through the file's staged data (write_ops.rs).
    /// Returns the handle and whether the kernel may keep the pages it
    /// cached at the previous open (same ETag: case 6).
    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<(u64, bool)> {
        let inode = self.inode(ino)?;
        match inode.attr.kind {
            EntryKind::Directory => return Err(libc::EISDIR),
            EntryKind::Symlink => return Err(libc::ELOOP),
            EntryKind::File => {}
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = writable && flags & libc::O_TRUNC != 0;
        if writable {
            let file = self.dirty_for(&inode, truncate).await?;
            return Ok((self.staged_handle(ino, file, true), false));
        }
        if let Some(writes) = &self.writes
            && let Some(file) = writes.get_held(ino)
        {
            return Ok((self.staged_handle(ino, file, false), false));
        }
        let attr = match (&inode.attr.etag, inode.expires > Instant::now()) {
            (Some(_), true) => inode.attr.clone(),
            _ => self.refresh(&inode).await?,
        };
        let etag = attr.etag.clone().unwrap_or_default();
        let keep_cache = !etag.is_empty() && self.inodes.lock().note_open(ino, &etag);
        let reader = FileReader::new(
            self.store.clone(),
            self.blocks.clone(),
            inode.key.clone(),
            etag,
            attr.size,
            self.config.readahead,
        );
        let handle = Handle::File {
            ino,
            reader: Arc::new(reader),
        };
        Ok((self.add_file_handle(ino, handle), keep_cache))
    }

    fn staged_handle(&self, ino: u64, file: Arc<DirtyFile>, writable: bool) -> u64 {
        // The kernel's cached pages of this inode no longer describe a
        // version that exists in the bucket.
        self.inodes.lock().note_open(ino, "");
        self.add_file_handle(
            ino,
            Handle::Staged {
                ino,
                file,
                writable,
                base: Mutex::new(None),
            },
        )
    }

    /// Bytes `offset..offset+len` of an open file (short at EOF).
    pub async fn read(&self, fh: u64, offset: u64, len: u32) -> FsResult<bytes::Bytes> {
        let handle = self.handle(fh)?;
        match &*handle {
            Handle::File { ino, reader } => match self.staged(*ino) {
                // Being written through another handle: see those writes.
                Some(file) => self.read_staged(&file, None, offset, len).await,
                None => reader
                    .read(offset, len)
                    .await
                    .map_err(|e| self.fail(&format!("reading {:?}", reader.key()), e)),
            },
            Handle::Staged { file, base, .. } => {
                self.read_staged(file, Some(base), offset, len).await
            }
            Handle::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// Closes a file or directory handle.
    pub fn release(&self, fh: u64) {
        let handle = self.handles.lock().remove(&fh);
        match handle.as_deref() {
            Some(Handle::File { ino, .. }) => self.file_closed(*ino, None),
            Some(Handle::Staged { ino, file, .. }) => self.file_closed(*ino, Some(file)),
            _ => {}
        }
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Arc::new(handle));
        fh
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        self.handles.lock().get(&fh).cloned().ok_or(libc::EBADF)
    }

    /// How many inodes and handles are live (for logs and tests).
    pub fn counts(&self) -> (usize, usize) {
        (self.inodes.lock().len(), self.handles.lock().len())
    }

    /// The root inode number.
    pub fn root(&self) -> u64 {
        ROOT_INO
    }

    /// What the mount is doing (`bucketfs stats`, fs/stats.rs).
    pub fn stats(&self) -> crate::fs::stats::Stats {
        let mut s = crate::fs::stats::Stats {
            bucket: self.store.bucket().to_string(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            open_files: self.handles.lock().len() as u64,
            inodes: self.inodes.lock().len() as u64,
            requests: self.store.request_counts(),
            ..Default::default()
        };
        s.set_cache(self.blocks.capacity(), &self.blocks.stats());
        if let Some(disk) = self.blocks.disk() {
            let d = disk.stats();
            s.disk_cache = Some(crate::fs::stats::DiskCacheFigures {
                dir: disk.dir().display().to_string(),
                capacity: disk.capacity(),
                bytes: d.bytes,
                hits: d.hits,
                misses: d.misses,
            });
        }
        if let Some(writes) = &self.writes {
            let pending = writes.pending();
            s.pending_uploads = pending.len() as u64;
            s.pending_bytes = pending.iter().map(|f| f.size()).sum();
            s.staged_bytes = writes.staging.staged_bytes();
            s.staging_dir = Some(writes.staging.dir().display().to_string());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Dialect, ObjectAttributes, Operation, Provider, PutRequest};
    use bytes::Bytes;
    use std::time::SystemTime;

    fn defaults() -> AttrDefaults {
        AttrDefaults {
            uid: 1000,
            gid: 1000,
            file_mode: 0o644,
            dir_mode: 0o755,
            mount_time: SystemTime::UNIX_EPOCH,
        }
    }

    fn fs_over(store: &Arc<MemoryStore>) -> Arc<BucketFs> {
        fs_caching(store, 100_000)
    }

    fn fs_caching(store: &Arc<MemoryStore>, listing_cache_entries: usize) -> Arc<BucketFs> {
        BucketFs::new(
            store.clone(),
            Arc::new(BlockCache::new(64 << 20, 1 << 20)),
            FsConfig {
                root_prefix: String::new(),
                defaults: defaults(),
                umask: 0o022,
                attr_ttl: Duration::from_secs(60),
                dir_ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(60),
                listing_cache_entries,
                readahead: ReadaheadConfig::default(),
                kernel_cache: false,
            },
            None,
        )
    }

    async fn put(store: &MemoryStore, key: &str, body: &[u8], meta: &[(&str, &str)]) {
        let mut attributes = ObjectAttributes::default();
        for (k, v) in meta {
            attributes.metadata.insert(k.to_string(), v.to_string());
        }
        store
            .put_object(&PutRequest {
                key: key.into(),
                body: Bytes::copy_from_slice(body),
                attributes,
            })
            .await
            .unwrap();
    }

    /// Every row of a pass over an open directory, read as the kernel
    /// does: each call at the offset after the last row it got, taking at
    /// most `per_call` rows.
    async fn read_rows(fs: &BucketFs, ino: u64, dh: u64, per_call: usize) -> Vec<DirRow> {
        let mut rows = Vec::new();
        let mut offset = 0;
        loop {
            let window = fs.readdir(ino, dh, offset).await.unwrap();
            let got: Vec<_> = window.from(offset).take(per_call).collect();
            let Some((last, _)) = got.last() else {
                return rows;
            };
            offset = last + 1;
            rows.extend(got.into_iter().map(|(_, row)| row.clone()));
        }
    }

    fn names(rows: &[DirRow]) -> Vec<&str> {
        rows.iter().map(|r| r.name.as_str()).collect()
    }

    /// HEAD and LIST requests sent so far.
    fn requests(store: &MemoryStore) -> u64 {
        store.calls(Operation::HeadObject) + store.calls(Operation::ListObjectsV2)
    }

    #[tokio::test]
    async fn readdir_then_lookup_of_a_listed_directory_costs_no_request() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        put(&store, "d/x", b"1", &[]).await;
        put(&store, "f", b"22", &[]).await;
        let fs = fs_over(&store);
        let dh = fs.opendir(ROOT_INO).unwrap();
        let rows = read_rows(&fs, ROOT_INO, dh, usize::MAX).await;
        assert_eq!(names(&rows), [".", "..", "d", "f"]);
        let before = requests(&store);
        let d = fs.lookup(ROOT_INO, "d").await.unwrap().unwrap();
        assert_eq!(d.attr.kind, EntryKind::Directory);
        assert_eq!(requests(&store), before, "directory from the listing");
        assert!(fs.lookup(ROOT_INO, "missing").await.unwrap().is_none());
        assert_eq!(requests(&store), before, "absent from a fresh listing");
        // A file needs its metadata: one HEAD, no LIST.
        let f = fs.lookup(ROOT_INO, "f").await.unwrap().unwrap();
        assert_eq!(f.attr.size, 2);
        assert_eq!(store.calls(Operation::HeadObject), 1);
        assert_eq!(requests(&store), before + 1);
    }

    #[tokio::test]
    async fn lookup_without_a_listing_reads_metadata_and_symlinks() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        put(
            &store,
            "exec",
            b"#!",
            &[("mode", "33261"), ("uid", "7"), ("mtime", "1700000000")],
        )
        .await;
        put(&store, "link", b"exec", &[("mode", "41471")]).await;
        let fs = fs_over(&store);
        let e = fs.lookup(ROOT_INO, "exec").await.unwrap().unwrap();
        assert_eq!(
            (e.attr.kind, e.attr.perm, e.attr.uid),
            (EntryKind::File, 0o755, 7)
        );
        assert_eq!(fs.perm(&e.attr), 0o755, "umask 022 leaves 755 alone");
        let l = fs.lookup(ROOT_INO, "link").await.unwrap().unwrap();
        assert_eq!(l.attr.kind, EntryKind::Symlink);
        assert_eq!(fs.readlink(l.ino).await.unwrap(), b"exec");
        // A miss is remembered.
        assert!(fs.lookup(ROOT_INO, "nope").await.unwrap().is_none());
        let before = requests(&store);
        assert!(fs.lookup(ROOT_INO, "nope").await.unwrap().is_none());
        assert_eq!(requests(&store), before);
    }

    #[tokio::test]
    async fn open_pins_the_version_and_a_replaced_object_gives_estale() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        let v1 = vec![1u8; 3 << 20];
        put(&store, "big", &v1, &[]).await;
        let fs = fs_over(&store);
        let e = fs.lookup(ROOT_INO, "big").await.unwrap().unwrap();
        let (fh, _) = fs.open(e.ino, libc::O_RDONLY).await.unwrap();
        assert_eq!(&fs.read(fh, 0, 4096).await.unwrap()[..], &v1[..4096]);
        put(&store, "big", &vec![2u8; 3 << 20], &[]).await;
        assert_eq!(fs.read(fh, 2 << 20, 4096).await, Err(libc::ESTALE));
        fs.release(fh);
        assert_eq!(fs.read(fh, 0, 1).await, Err(libc::EBADF));
        // Reopened once the attributes expired: the new version, so the
        // kernel must drop the pages of the old one; a second open of the
        // same version may keep them.
        fs.inodes
            .lock()
            .refresh(e.ino, e.attr.clone(), false, Instant::now());
        let (fh, keep) = fs.open(e.ino, libc::O_RDONLY).await.unwrap();
        assert!(!keep);
        assert_eq!(&fs.read(fh, 0, 4).await.unwrap()[..], &[2u8; 4]);
        let (_, keep) = fs.open(e.ino, libc::O_RDONLY).await.unwrap();
        assert!(keep);
    }

    #[tokio::test]
    async fn invalid_keys_are_skipped_and_a_clash_shows_the_directory() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        put(&store, "a//b", b"x", &[]).await;
        put(&store, "clash", b"file", &[]).await;
        put(&store, "clash/in", b"x", &[]).await;
        let fs = fs_over(&store);
        let dh = fs.opendir(ROOT_INO).unwrap();
        let rows = read_rows(&fs, ROOT_INO, dh, usize::MAX).await;
        let kinds: Vec<(&str, EntryKind)> = rows
            .iter()
            .skip(2)
            .map(|r| (r.name.as_str(), r.kind))
            .collect();
        assert_eq!(
            kinds,
            [("a", EntryKind::Directory), ("clash", EntryKind::Directory)]
        );
        let a = fs.lookup(ROOT_INO, "a").await.unwrap().unwrap();
        let dh = fs.opendir(a.ino).unwrap();
        let rows = read_rows(&fs, a.ino, dh, usize::MAX).await;
        assert_eq!(
            rows.len(),
            2,
            "only . and ..: the empty component is skipped"
        );
    }

    /// Puts objects under `big/` whose names sort apart from their keys,
    /// `n` of them after 999 names and a cluster that a window of the
    /// cached listing ends in: `d` (a directory, key `d/`), then `d!0`,
    /// `d-1` and `d.2` (keys before `d/`). Returns the names, sorted.
    async fn put_many(store: &MemoryStore, n: usize) -> Vec<String> {
        let mut names = Vec::new();
        for i in 0..999 {
            let name = format!("a{i:05}");
            put(store, &format!("big/{name}"), b"x", &[]).await;
            names.push(name);
        }
        put(store, "big/d/inner", b"x", &[]).await;
        names.push("d".to_string());
        for (i, sep) in ["!", "-", "."].iter().enumerate() {
            let name = format!("d{sep}{i}");
            put(store, &format!("big/{name}"), b"x", &[]).await;
            names.push(name);
        }
        for i in 0..n {
            let name = format!("f{i:05}");
            put(store, &format!("big/{name}"), b"x", &[]).await;
            names.push(name);
        }
        names.sort();
        assert_eq!(names[readdir::WINDOW - 1], "d");
        names
    }

    #[tokio::test]
    async fn a_directory_bigger_than_the_cache_is_read_a_page_at_a_time() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        let expected = put_many(&store, 1500).await;
        let fs = fs_caching(&store, 1000);
        let big = fs.lookup(ROOT_INO, "big").await.unwrap().unwrap();
        for per_call in [usize::MAX, 7] {
            let lists = store.calls(Operation::ListObjectsV2);
            let dh = fs.opendir(big.ino).unwrap();
            let rows = read_rows(&fs, big.ino, dh, per_call).await;
            let mut got: Vec<&str> = names(&rows[2..]);
            got.sort();
            assert_eq!(got, expected, "every name once, {per_call} per call");
            assert_eq!(
                store.calls(Operation::ListObjectsV2) - lists,
                3,
                "one LIST a page"
            );
            fs.release(dh);
        }
        assert_eq!(fs.listings.lock().held(), 0, "too big to cache");
        assert_eq!(fs.collect_budget.used(), 0);
        // Without a cached listing, a lookup asks the store.
        let heads = store.calls(Operation::HeadObject);
        assert!(fs.lookup(big.ino, "f00001").await.unwrap().is_some());
        assert_eq!(store.calls(Operation::HeadObject), heads + 1);
        // Seeking back restarts the pass and finds the same rows.
        let dh = fs.opendir(big.ino).unwrap();
        let first = read_rows(&fs, big.ino, dh, usize::MAX).await;
        let window = fs.readdir(big.ino, dh, 1500).await.unwrap();
        let (at, row) = window.from(1500).next().unwrap();
        assert_eq!((at, &row.name), (1500, &first[1500].name));
    }

    #[tokio::test]
    async fn a_cached_listing_invalidated_mid_pass_loses_and_repeats_nothing() {
        let store = Arc::new(MemoryStore::new(Dialect::new(Provider::S3), "b"));
        let expected = put_many(&store, 500).await;
        let fs = fs_over(&store);
        let big = fs.lookup(ROOT_INO, "big").await.unwrap().unwrap();
        // A pass starts from the cache, which is dropped after its first
        // window (the dots) or its second (up to `d`, whose key sorts
        // after the next names'): the pass goes on from the store.
        for stop_after in [2, 1002] {
            let dh = fs.opendir(big.ino).unwrap();
            let rows = read_rows(&fs, big.ino, dh, usize::MAX).await;
            assert_eq!(rows.len(), 2 + expected.len());
            assert_eq!(fs.listings.lock().held(), expected.len() + 1, "cached");
            let lists = store.calls(Operation::ListObjectsV2);
            let mut seen = Vec::new();
            let mut offset = 0;
            loop {
                let window = fs.readdir(big.ino, dh, offset).await.unwrap();
                let got: Vec<_> = window.from(offset).collect();
                let Some((last, _)) = got.last() else { break };
                offset = last + 1;
                seen.extend(got.iter().map(|(_, r)| r.name.clone()));
                if offset as usize >= stop_after {
                    fs.invalidate_listing("big/");
                }
            }
            assert!(store.calls(Operation::ListObjectsV2) > lists, "listed");
            let mut got: Vec<&str> = seen[2..].iter().map(String::as_str).collect();
            got.sort();
            assert_eq!(got, expected, "invalidated after {stop_after} rows");
        }
    }
}
