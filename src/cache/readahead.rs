//! Per-handle readahead planning.
