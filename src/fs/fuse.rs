//! The `fuser` adapter: decodes each kernel request, runs the matching
//! [`BucketFs`] call in a Tokio task and replies from there.
//!
//! Subtle cases:
//! 1. **FUSE threads never wait on the network.** Every callback that may
//!    do I/O runs as a future that is polled once on the FUSE thread: if it
//!    finishes (the answer was cached) the reply goes out from there,
//!    without a hop to another thread; if it would wait, it is handed to
//!    the Tokio runtime and the thread returns at once. So a slow GET never
//!    stalls a `stat` behind it, and a cached read costs no thread switch.
//! 2. **READDIRPLUS binds entries.** Each entry the reply buffer accepts is
//!    one kernel lookup; an entry the full buffer refuses is forgotten again
//!    at once, or its inode would never be dropped.
//! 3. **Negative entries** are replied as an entry with inode 0 and the
//!    negative TTL, which the kernel caches as "no such name".
//! 4. **Writes** are staged and uploaded by the core (`write_ops.rs`); a
//!    mount with `-o ro` is mounted read-only, so the kernel refuses them
//!    with EROFS first. `link` is EPERM (an object store has no hard
//!    links) and `mknod` of anything but a regular file EPERM.
//! 5. **Direct I/O by default.** Files are opened with `FOPEN_DIRECT_IO`:
//!    every read comes here and is served from the block cache, so file
//!    data is cached once, in memory bounded by `cache_size`, instead of a
//!    second time in the page cache. This also made cold sequential reads
//!    steadier and faster here: filling fresh page-cache pages cost more
//!    CPU than the whole rest of the read path (README, "Read
//!    performance"). `mmap` still works where the kernel offers
//!    `FUSE_DIRECT_IO_ALLOW_MMAP` (Linux 6.6+); older kernels refuse
//!    shared mappings of such files (ENODEV). With `-o kernel_cache` the
//!    page cache is used instead, and kept across opens of an unchanged
//!    object (filesystem.rs, subtle case 6).
//! 6. **A bug must not end the mount.** A panic while a request is handled
//!    on a FUSE thread is caught and logged, and the request fails with
//!    EIO; uncaught, it would end the session and leave a dead mount.
//! 7. **A killed reader is let go.** The kernel holds a process killed
//!    while the daemon has its request until the daemon answers; with the
//!    server down that is the whole retry budget. Read-only requests
//!    (lookup, getattr, read-only open, read, readlink, readdir, xattr
//!    reads) change nothing before their network waits, so they are
//!    dropped once their requester has SIGKILL pending (requester.rs).
//!    Requests that change something always run to their end.

use crate::fs::filesystem::{BucketFs, Entry, SetAttr};
use crate::fs::namespace::{EntryAttr, EntryKind};
use crate::fs::requester;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::sync::Arc;
use std::task::{Context, Waker};
use tokio::runtime::Handle;

/// Largest read the kernel may send in one request, and its readahead: as
/// large as FUSE allows, so a sequential reader costs few round trips.
const MAX_READAHEAD: u32 = 1 << 20;

/// Background requests the kernel may have outstanding (readahead, async
/// reads); the default of 16 would cap parallel readers.
const MAX_BACKGROUND: u16 = 64;

/// Block size reported in `stat`: tools such as `cp` size their buffers by
/// it, and 1 MiB matches the cache's block.
const REPORTED_BLKSIZE: u32 = 1 << 20;

/// What `statfs` reports: object stores have no fixed capacity, so a large
/// constant (1 PiB in 1 MiB blocks) keeps `df` and free-space checks happy.
const STATFS_BLOCKS: u64 = 1 << 30;
const STATFS_FILES: u64 = 1 << 32;

/// The adapter. Cheap to clone into tasks via its `Arc`.
pub struct FuseAdapter {
    fs: Arc<BucketFs>,
    runtime: Handle,
}

impl FuseAdapter {
    pub fn new(fs: Arc<BucketFs>, runtime: Handle) -> FuseAdapter {
        FuseAdapter { fs, runtime }
    }

    /// Runs `work` to its reply: polled once here, on the FUSE thread,
    /// and handed to the runtime only if it has to wait (subtle case 1).
    fn spawn<F>(&self, work: impl FnOnce(Arc<BucketFs>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Inside the runtime's context, so the future may spawn tasks and
        // use Tokio's timers and channels while it is polled here.
        let _context = self.runtime.enter();
        let mut work = Box::pin(work(self.fs.clone()));
        // A no-op waker is enough: if the future is pending, the runtime
        // polls it again right away and it registers the runtime's waker.
        let polled = guarded("a request", || {
            work.as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        });
        if polled == Some(true) {
            self.runtime.spawn(work);
        }
    }

    /// [`Self::spawn`] for a read-only request whose future may be dropped
    /// at any await without harm: if it has to wait and the process that
    /// asked is killed meanwhile, it is dropped, so the kernel can let the
    /// process go at once (subtle case 7).
    fn spawn_abandonable<F>(&self, req: &Request, work: impl FnOnce(Arc<BucketFs>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let requester = req.pid();
        self.spawn(move |fs| {
            let work = work(fs);
            async move {
                tokio::select! {
                    // The work first: a request answered at once never
                    // starts the watch's timer.
                    biased;
                    () = work => {}
                    () = requester::killed(requester) => {
                        tracing::debug!(pid = requester, "requester killed; request abandoned");
                    }
                }
            }
        });
    }

    /// Runs a synchronous call of the core on the FUSE thread, inside the
    /// runtime's context (it may start tasks) and guarded (subtle case 6).
    fn run<T>(&self, what: &str, call: impl FnOnce(&BucketFs) -> T) -> Option<T> {
        let _context = self.runtime.enter();
        guarded(what, || call(&self.fs))
    }
}

/// Runs `f`, turning a panic into `None` and a log line: a panic on a FUSE
/// worker thread would end the whole session (subtle case 6). The reply
/// object, dropped unanswered, makes fuser answer EIO.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::error!("bug: {what} panicked; answered with EIO");
            None
        }
    }
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

/// The kernel's view of an entry.
pub fn file_attr(fs: &BucketFs, ino: u64, attr: &EntryAttr) -> FileAttr {
    let kind = match attr.kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Directory => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
    };
    FileAttr {
        ino: INodeNo(ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm: fs.perm(attr),
        nlink: if attr.kind == EntryKind::Directory {
            2
        } else {
            1
        },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: REPORTED_BLKSIZE,
        flags: 0,
    }
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Directory => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
    }
}

fn reply_entry(fs: &BucketFs, reply: ReplyEntry, entry: &Entry) {
    reply.entry(
        &entry.ttl,
        &file_attr(fs, entry.ino, &entry.attr),
        Generation(0),
    );
}

/// A negative entry (case 3): inode 0, cached for the negative TTL.
fn reply_negative(fs: &BucketFs, reply: ReplyEntry) {
    let ttl = fs.config().negative_ttl;
    if ttl.is_zero() {
        return reply.error(Errno::ENOENT);
    }
    let mut attr = file_attr(
        fs,
        0,
        &crate::fs::namespace::implicit_dir_attr(&fs.config().defaults),
    );
    attr.ino = INodeNo(0);
    reply.entry(&ttl, &attr, Generation(0));
}

/// How the kernel caches an open file (subtle case 5).
fn open_flags(fs: &BucketFs, keep_cache: bool) -> FopenFlags {
    if !fs.config().kernel_cache {
        FopenFlags::FOPEN_DIRECT_IO
    } else if keep_cache {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), i32>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

/// An xattr reply: the size when asked with size 0, ERANGE when `value`
/// does not fit, else the value.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

impl fuser::Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::info!("the kernel does not offer READDIRPLUS; ls -l will send lookups");
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Subtle case 5: shared mmap of direct-I/O files, and large direct
        // reads split into requests that run in parallel.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // O_TRUNC arrives with the open, instead of as a separate setattr
        // that would stage (and upload) an empty file first.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            // Keys are UTF-8: a name that is not cannot exist in the bucket.
            return reply.error(Errno::ENOENT);
        };
        self.spawn_abandonable(req, |fs| async move {
            match fs.lookup(parent.0, &name).await {
                Ok(Some(entry)) => reply_entry(&fs, reply, &entry),
                Ok(None) => reply_negative(&fs, reply),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.run("forget", |fs| fs.forget(ino.0, nlookup));
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn_abandonable(req, |fs| async move {
            match fs.getattr(ino.0).await {
                Ok(entry) => reply.attr(&entry.ttl, &file_attr(&fs, entry.ino, &entry.attr)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn_abandonable(req, |fs| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let flags = flags.0;
        let work = move |fs: Arc<BucketFs>| async move {
            match fs.open(ino.0, flags).await {
                Ok((fh, keep_cache)) => reply.opened(FileHandle(fh), open_flags(&fs, keep_cache)),
                Err(e) => reply.error(errno(e)),
            }
        };
        // A read-only open makes its handle after its last wait; a writable
        // one stages the file first.
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            self.spawn_abandonable(req, work);
        } else {
            self.spawn(work);
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn_abandonable(req, |fs| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(bytes) => reply.data(&bytes),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.run("release", |fs| fs.release(fh.0));
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move { empty(reply, fs.flush(fh.0).await) });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move { empty(reply, fs.fsync(fh.0).await) });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        // Staging is a local file write: done here, on the FUSE thread.
        match self.run("write", |fs| fs.write(fh.0, offset, data)) {
            Some(Ok(n)) => reply.written(n),
            Some(Err(e)) => reply.error(errno(e)),
            None => reply.error(Errno::EIO),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let result = self.run("fallocate", |fs| fs.fallocate(fh.0, offset, length, mode));
        empty(reply, result.unwrap_or(Err(libc::EIO)));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(|fs| async move {
            match fs.create(parent.0, &name, mode & !umask, uid, gid).await {
                Ok((entry, fh)) => reply.created(
                    &entry.ttl,
                    &file_attr(&fs, entry.ino, &entry.attr),
                    Generation(0),
                    FileHandle(fh),
                    open_flags(&fs, false),
                ),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(|fs| async move {
            match fs.create(parent.0, &name, mode & !umask, uid, gid).await {
                Ok((entry, fh)) => {
                    // An empty file, uploaded like any other.
                    let _ = fs.flush(fh).await;
                    fs.release(fh);
                    reply_entry(&fs, reply, &entry)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            size,
            mode,
            uid,
            gid,
            mtime: mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => std::time::SystemTime::now(),
            }),
        };
        if set == SetAttr::default() {
            // atime or ctime only: nothing an object stores.
            return self.getattr(_req, ino, None, reply);
        }
        self.spawn(|fs| async move {
            match fs.setattr(ino.0, set).await {
                Ok(entry) => reply.attr(&entry.ttl, &file_attr(&fs, entry.ino, &entry.attr)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::EINVAL);
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(|fs| async move {
            match fs.mkdir(parent.0, &name, mode & !umask, uid, gid).await {
                Ok(entry) => reply_entry(&fs, reply, &entry),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (Some(name), Some(target)) = (
            link_name.to_str().map(str::to_string),
            target.to_str().map(str::to_string),
        ) else {
            return reply.error(Errno::EINVAL);
        };
        let (uid, gid) = (req.uid(), req.gid());
        self.spawn(|fs| async move {
            match fs.symlink(parent.0, &name, &target, uid, gid).await {
                Ok(entry) => reply_entry(&fs, reply, &entry),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move { empty(reply, fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move { empty(reply, fs.rmdir(parent.0, &name).await) });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (
            name.to_str().map(str::to_string),
            newname.to_str().map(str::to_string),
        ) else {
            return reply.error(Errno::EINVAL);
        };
        let flags = flags.bits();
        self.spawn(|fs| async move {
            empty(
                reply,
                fs.rename(parent.0, &name, newparent.0, &newname, flags)
                    .await,
            )
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Object stores have no hard links.
        reply.error(Errno::EPERM);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENOTSUP);
        };
        let value = value.to_vec();
        self.spawn(
            |fs| async move { empty(reply, fs.setxattr(ino.0, &name, &value, flags).await) },
        );
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENODATA);
        };
        self.spawn_abandonable(req, |fs| async move {
            match fs.getxattr(ino.0, &name).await {
                Ok(value) => xattr_reply(reply, size, &value),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.spawn_abandonable(req, |fs| async move {
            match fs.listxattr(ino.0).await {
                Ok(names) => {
                    let mut list = Vec::new();
                    for n in names {
                        list.extend_from_slice(n.as_bytes());
                        list.push(0);
                    }
                    xattr_reply(reply, size, &list)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str().map(str::to_string) else {
            return reply.error(Errno::ENODATA);
        };
        self.spawn(|fs| async move { empty(reply, fs.removexattr(ino.0, &name).await) });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn_abandonable(req, |fs| async move {
            let window = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(window) => window,
                Err(e) => return reply.error(errno(e)),
            };
            for (at, row) in window.from(offset) {
                let row_ino = fs.row_ino(ino.0, row, at);
                if reply.add(INodeNo(row_ino), at + 1, file_type(row.kind), &row.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.spawn_abandonable(req, |fs| async move {
            let window = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(window) => window,
                Err(e) => return reply.error(errno(e)),
            };
            for (at, row) in window.from(offset) {
                let entry = fs.bind_row(ino.0, row);
                let attr = file_attr(&fs, entry.ino, &entry.attr);
                let full = reply.add(
                    INodeNo(entry.ino),
                    at + 1,
                    &row.name,
                    &entry.ttl,
                    &attr,
                    Generation(0),
                );
                if full {
                    // Case 2: the kernel did not get this one.
                    if row.child.is_some() {
                        fs.forget(entry.ino, 1);
                    }
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.run("release", |fs| fs.release(fh.0));
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_FILES,
            STATFS_FILES,
            REPORTED_BLKSIZE,
            crate::fs::namespace::NAME_MAX as u32,
            REPORTED_BLKSIZE,
        );
    }
}
