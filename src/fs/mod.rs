//! Filesystem core: how keys become paths and attributes (`namespace`), the
//! inode table (`inode`), the cache of directory listings
//! (`listing_cache`), the read side of an open file (`reader`), the
//! write path (`write`: staged files, upload planning and uploads), the
//! async core answering POSIX calls (`filesystem`) and the `fuser` adapter
//! in front of it (`fuse`).

pub mod filesystem;
pub mod fuse;
pub mod inode;
pub mod listing_cache;
pub mod namespace;
pub mod reader;
pub mod requester;
pub mod stats;
pub mod write;
