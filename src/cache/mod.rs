//! Caches of the read path: the shared LRU block cache (`block`), its
//! optional disk tier (`disk`) and the per-handle readahead planner
//! (`readahead`).

pub mod block;
pub mod disk;
pub mod readahead;
