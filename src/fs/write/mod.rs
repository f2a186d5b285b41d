//! The write path.
pub mod plan;
