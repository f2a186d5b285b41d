//! Filesystem core: how keys become paths and attributes (`namespace`).
//! The FUSE adapter, inode table and handles come with the mount.

pub mod namespace;
