//! The write path.
pub mod dirty;
pub mod meta;
pub mod plan;
pub mod upload;
