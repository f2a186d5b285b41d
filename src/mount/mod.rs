//! `bucketfs mount`: what to mount and how, from the command line.

pub mod config;
