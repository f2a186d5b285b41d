//! `bucketfs mount`: what to mount and how (`config`), checks on the mount
//! point (`mountpoint`), running the mount (`run`) and detaching from the
//! terminal (`detach`).

pub mod config;
pub mod credentials;
pub mod detach;
pub mod helper;
pub mod mountpoint;
pub mod run;
