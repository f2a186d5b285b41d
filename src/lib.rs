//! bucketfs: mount an object-storage bucket as a filesystem.
pub mod store;
