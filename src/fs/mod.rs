//! Filesystem core: how keys become paths and attributes (`namespace`), and
//! the read side of an open file handle (`reader`). The FUSE adapter, inode
//! table and handles come with the mount.

pub mod namespace;
pub mod reader;
