//! `bucketfs mount`: what to mount and how (`config`), where the
//! credentials come from (`credentials`), the mount(8) and mount.fuse3
//! calling conventions (`helper`), checks on the mount point
//! (`mountpoint`), running the mount (`run`: probe, session, systemd
//! notifications, signals, drain), detaching from the terminal
//! (`detach`) and `bucketfs umount`, which waits for the uploads
//! (`umount`).

pub mod config;
pub mod credentials;
pub mod detach;
pub mod helper;
pub mod mountpoint;
pub mod run;
pub mod umount;
