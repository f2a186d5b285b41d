//! What a running mount is doing, for `bucketfs stats MOUNTPOINT`.
//!
//! The daemon answers a read of the extended attribute [`STATS_XATTR`] on
//! the mount's root directory with a JSON [`Stats`] document (built by
//! `BucketFs::stats`); the command reads it with getxattr(2). So it needs no
//! socket or file of its own, works for whoever may read the mount point,
//! and always shows the live state. The attribute is not listed by
//! listxattr.

use crate::cache::block::CacheStats;
use crate::store::counters::RequestCount;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// The attribute of the root directory that holds the statistics.
pub const STATS_XATTR: &str = "user.bucketfs.stats";

/// The statistics of a mount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub bucket: String,
    /// The daemon's process id (`bucketfs umount` waits for it to end).
    #[serde(default)]
    pub pid: u32,
    pub uptime_secs: u64,
    /// Files whose staged data awaits upload, and their bytes.
    pub pending_uploads: u64,
    pub pending_bytes: u64,
    /// Bytes held by staging files, and where they are.
    pub staged_bytes: u64,
    pub staging_dir: Option<String>,
    pub open_files: u64,
    pub inodes: u64,
    pub cache_capacity: u64,
    pub cache_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// The disk tier (`disk_cache`), when there is one.
    #[serde(default)]
    pub disk_cache: Option<DiskCacheFigures>,
    /// HTTP requests and failures per operation, with the last error.
    pub requests: BTreeMap<String, RequestCount>,
}

/// What the disk tier holds and how often it served a block.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCacheFigures {
    pub dir: String,
    pub capacity: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Stats {
    /// The block-cache part from its counters.
    pub fn set_cache(&mut self, capacity: u64, c: &CacheStats) {
        self.cache_capacity = capacity;
        self.cache_bytes = c.bytes;
        self.cache_hits = c.hits;
        self.cache_misses = c.misses;
    }
}

/// Reads the statistics of the mount at `mount_point`.
pub fn read_from_mount(mount_point: &Path) -> Result<String, String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mount_point.as_os_str().as_bytes())
        .map_err(|_| "the path holds a NUL byte".to_string())?;
    let name = std::ffi::CString::new(STATS_XATTR).expect("no NUL in a constant");
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: valid NUL-terminated strings; the buffer is writable for its
    // length, and the result is checked before use.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => {
                format!("{} is not a bucketfs mount point", mount_point.display())
            }
            _ => format!("{}: {e}", mount_point.display()),
        });
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).map_err(|_| "the statistics are not text".to_string())
}

/// A person's view of the JSON statistics.
pub fn render(json: &str) -> String {
    let Ok(s) = serde_json::from_str::<Stats>(json) else {
        return format!("{json}\n");
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = String::new();
    let _ = writeln!(out, "bucket          {}", s.bucket);
    let _ = writeln!(out, "uptime          {} s", s.uptime_secs);
    let _ = writeln!(
        out,
        "pending uploads {} file(s), {:.1} MiB",
        s.pending_uploads,
        mib(s.pending_bytes)
    );
    let _ = writeln!(
        out,
        "staged          {:.1} MiB in {}",
        mib(s.staged_bytes),
        s.staging_dir.as_deref().unwrap_or("(read-only mount)")
    );
    let _ = writeln!(out, "open files      {}  inodes {}", s.open_files, s.inodes);
    let _ = writeln!(
        out,
        "block cache     {:.1} of {:.1} MiB, {} hits, {} misses",
        mib(s.cache_bytes),
        mib(s.cache_capacity),
        s.cache_hits,
        s.cache_misses
    );
    if let Some(d) = &s.disk_cache {
        let _ = writeln!(
            out,
            "disk cache      {:.1} of {:.1} MiB in {}, {} hits, {} misses",
            mib(d.bytes),
            mib(d.capacity),
            d.dir,
            d.hits,
            d.misses
        );
    }
    let _ = writeln!(out, "requests        operation: sent, failed");
    for (op, c) in &s.requests {
        let _ = writeln!(out, "  {op}: {}, {}", c.requests, c.errors);
        if let Some(e) = &c.last_error {
            let _ = writeln!(out, "    last error: {e}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_the_figures() {
        let mut s = Stats {
            bucket: "bkt".into(),
            pending_uploads: 2,
            pending_bytes: 3 << 20,
            ..Stats::default()
        };
        s.requests.insert(
            "PutObject".into(),
            RequestCount {
                requests: 5,
                errors: 1,
                last_error: Some("HTTP 500 (request id abc)".into()),
            },
        );
        let text = render(&serde_json::to_string(&s).unwrap());
        assert!(
            text.contains("pending uploads 2 file(s), 3.0 MiB"),
            "{text}"
        );
        assert!(
            text.contains("PutObject: 5, 1") && text.contains("request id abc"),
            "{text}"
        );
        assert!(!text.contains("disk cache"), "{text}");
        s.disk_cache = Some(DiskCacheFigures {
            dir: "/var/tmp/c/bucketfs-7".into(),
            capacity: 1 << 30,
            bytes: 3 << 20,
            hits: 12,
            misses: 4,
        });
        let text = render(&serde_json::to_string(&s).unwrap());
        assert!(
            text.contains(
                "disk cache      3.0 of 1024.0 MiB in /var/tmp/c/bucketfs-7, 12 hits, 4 misses"
            ),
            "{text}"
        );
        // Statistics of a daemon from before the disk cache still parse.
        let old = r#"{"bucket":"b","uptime_secs":1,"pending_uploads":0,"pending_bytes":0,"staged_bytes":0,"staging_dir":null,"open_files":0,"inodes":1,"cache_capacity":1,"cache_bytes":0,"cache_hits":0,"cache_misses":0,"requests":{}}"#;
        assert!(render(old).contains("bucket          b"), "{}", render(old));
        assert_eq!(render("not json"), "not json\n");
    }
}
