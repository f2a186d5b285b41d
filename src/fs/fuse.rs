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
//! 4. **The mount is read-only for now** (write path: issue 5): it is
//!    mounted `ro`, so the kernel refuses writes with EROFS before they get
//!    here.
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

use crate::fs::filesystem::{BucketFs, Entry};
use crate::fs::namespace::{EntryAttr, EntryKind};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
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
        if work
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            self.runtime.spawn(work);
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
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_string) else {
            // Keys are UTF-8: a name that is not cannot exist in the bucket.
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move {
            match fs.lookup(parent.0, &name).await {
                Ok(Some(entry)) => reply_entry(&fs, reply, &entry),
                Ok(None) => reply_negative(&fs, reply),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(|fs| async move {
            match fs.getattr(ino.0).await {
                Ok(entry) => reply.attr(&entry.ttl, &file_attr(&fs, entry.ino, &entry.attr)),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(|fs| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        self.spawn(|fs| async move {
            match fs.open(ino.0).await {
                Ok((fh, keep_cache)) => {
                    let flags = if !fs.config().kernel_cache {
                        FopenFlags::FOPEN_DIRECT_IO
                    } else if keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(|fs| async move {
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
        self.fs.release(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is written through a read-only handle.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn(|fs| async move {
            let rows = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(rows) => rows,
                Err(e) => return reply.error(errno(e)),
            };
            for (i, row) in rows.iter().enumerate().skip(offset as usize) {
                let row_ino = fs.row_ino(ino.0, row, i);
                if reply.add(
                    INodeNo(row_ino),
                    i as u64 + 1,
                    file_type(row.kind),
                    &row.name,
                ) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.spawn(|fs| async move {
            let rows = match fs.readdir(ino.0, fh.0, offset).await {
                Ok(rows) => rows,
                Err(e) => return reply.error(errno(e)),
            };
            for (i, row) in rows.iter().enumerate().skip(offset as usize) {
                let entry = fs.bind_row(ino.0, row);
                let attr = file_attr(&fs, entry.ino, &entry.attr);
                let full = reply.add(
                    INodeNo(entry.ino),
                    i as u64 + 1,
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
        self.fs.release(fh.0);
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
