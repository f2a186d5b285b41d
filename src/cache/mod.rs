//! Caches of the read path: the shared LRU block cache (`block`) and the
//! per-handle readahead planner (`readahead`).

pub mod block;
pub mod readahead;
