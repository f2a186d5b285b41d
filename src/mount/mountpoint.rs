//! Checks on the mount point before anything is mounted, each failing with
//! a one-line message that says what to do.
//!
//! Subtle cases:
//! 1. A dead FUSE mount (its daemon killed) makes `stat` fail with
//!    ENOTCONN: that is "already mounted, and stale", with the command that
//!    clears it, not "does not exist".
//! 2. "Already a mount point" is read from `/proc/self/mountinfo` (exact
//!    path match, octal escapes decoded), which also catches a bind mount
//!    of a directory onto itself, where comparing device numbers would not.
//! 3. A non-empty directory is refused unless `nonempty` is given: files
//!    hidden under a mount confuse users (and `fusermount3` no longer
//!    checks this itself).

use std::io;
use std::path::{Path, PathBuf};

/// The mount point, absolute and checked; or why it cannot be used.
pub fn check_mount_point(path: &Path, nonempty: bool) -> Result<PathBuf, String> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!(
                "mount point {shown} does not exist (create it with: mkdir -p {shown})"
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(format!(
                "mount point {shown} is already a mount point, of a filesystem whose daemon is gone (clear it with: fusermount3 -u {shown})"
            ));
        }
        Err(e) => return Err(format!("mount point {shown} cannot be used: {e}")),
    };
    if !meta.is_dir() {
        return Err(format!("mount point {shown} is not a directory"));
    }
    let absolute = path
        .canonicalize()
        .map_err(|e| format!("mount point {shown} cannot be resolved: {e}"))?;
    if is_mount_point(&absolute) {
        return Err(format!(
            "mount point {shown} is already a mount point (unmount it first with: umount {shown})"
        ));
    }
    if !nonempty {
        let mut entries = std::fs::read_dir(&absolute)
            .map_err(|e| format!("mount point {shown} cannot be read: {e}"))?;
        if entries.next().is_some() {
            return Err(format!(
                "mount point {shown} is not empty (its files would be hidden; add -o nonempty to mount over them)"
            ));
        }
    }
    Ok(absolute)
}

/// Whether `absolute` is the mount point of a mounted filesystem.
pub fn is_mount_point(absolute: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    mount_points(&table).any(|p| Path::new(&p) == absolute)
}

/// The mount points listed in a mountinfo table (field 5, unescaped).
pub fn mount_points(table: &str) -> impl Iterator<Item = String> + '_ {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape)
}

/// Decodes the `\ooo` octal escapes mountinfo uses for space, tab,
/// newline and backslash.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let table = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                     37 35 0:5 / /proc rw - proc proc rw\n";
        let points: Vec<String> = mount_points(table).collect();
        assert_eq!(points, ["/mnt/with space", "/proc"]);
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn missing_file_and_non_empty_mount_points_are_refused() {
        let base = std::env::temp_dir().join(format!("bucketfs-mp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let missing = base.join("missing");
        assert!(
            check_mount_point(&missing, false)
                .unwrap_err()
                .contains("does not exist")
        );
        let file = base.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(
            check_mount_point(&file, false)
                .unwrap_err()
                .contains("not a directory")
        );
        let full = base.join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("x"), b"x").unwrap();
        assert!(
            check_mount_point(&full, false)
                .unwrap_err()
                .contains("nonempty")
        );
        assert_eq!(
            check_mount_point(&full, true).unwrap(),
            full.canonicalize().unwrap()
        );
        assert!(
            check_mount_point(Path::new("/proc"), true)
                .unwrap_err()
                .contains("already")
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
