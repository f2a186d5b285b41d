//! bucketfs: mount an object-storage bucket (Alibaba OSS, Huawei OBS,
//! Tencent COS or any S3-compatible store) as a filesystem.
//!
//! Layers (see `../shared/DESIGN.md`): `store` is the object-store client
//! (dialects, signers, HTTP with retries, an in-memory store for tests);
//! `errno` maps its errors to the errno values the filesystem replies with.

// Vectors of byte ranges (dirty ranges, parts) often hold one range; the
// lint reads `vec![a..b]` as a mistaken `(a..b).collect()`.
#![allow(clippy::single_range_in_vec_init)]

pub mod cache;
pub mod demo;
pub mod emulator;
pub mod errno;
pub mod fs;
pub mod mount;
pub mod staging;
pub mod store;
