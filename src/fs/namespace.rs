//! Keys to paths: which names a directory holds and what their attributes
//! are, from listing pages and HEAD responses (`../shared/DESIGN.md`,
//! Semantics).
//!
//! Subtle cases:
//! 1. A directory exists if a marker object `dir/` exists or any key starts
//!    with `dir/` (implicit directory); both arrive as a common prefix of the
//!    parent's listing, so readdir never needs a HEAD.
//! 2. A name that is both a file (`a`) and a prefix (`a/...`) shows as the
//!    directory; the file is reported as shadowed so the caller can log it.
//! 3. Keys that cannot be a path component are skipped and reported: empty
//!    components (`a//b`), `.` and `..`, names over 255 bytes, names with a
//!    NUL byte, and keys that are not UTF-8 (xml.rs leaves them out of
//!    the page's objects).
//! 4. Listings carry size, mtime and ETag only; permissions and owners come
//!    from the mount defaults until a HEAD reads the s3fs-compatible metadata
//!    (`mode`, `uid`, `gid`, `mtime`), which s3fs, ossfs, cosfs and obsfs
//!    all write as decimal numbers (`mode` is the whole `st_mode`, file-type
//!    bits included, e.g. `33188` for a 0644 regular file).
//! 5. A symlink is either an object whose `mode` metadata has the symlink
//!    type (s3fs family; the body is the target) or an OSS/COS native symlink
//!    object. Both are only recognisable after a HEAD: from a listing alone
//!    such an object shows as a file.

use crate::store::{ListEntry, ListPage, ObjectMeta, ObjectType, StoreError, StoreResult};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Longest file name Linux accepts (NAME_MAX).
pub const NAME_MAX: usize = 255;

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFLNK: u32 = libc::S_IFLNK;

/// Attributes given to objects that carry no metadata of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrDefaults {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files (e.g. 0o644).
    pub file_mode: u32,
    /// Permission bits of directories (e.g. 0o755).
    pub dir_mode: u32,
    /// Time given to implicit directories, which have none of their own.
    pub mount_time: SystemTime,
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

/// Attributes of one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryAttr {
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits only (no file-type bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    /// ETag of the backing object (files, symlinks, directory markers).
    pub etag: Option<String>,
}

/// One child of a directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    /// The object key (files) or prefix ending in `/` (directories).
    pub key: String,
    pub attr: EntryAttr,
}

/// Whether `name` can be a path component (subtle case 3).
pub fn valid_component(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains('/')
        && !name.contains('\0')
}

/// The children of one directory, built from its listing pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Children by name, in name order.
    pub entries: BTreeMap<String, DirEntry>,
    /// Keys (or prefixes) that cannot be shown, for logging once.
    pub skipped: Vec<String>,
    /// Files hidden by a directory of the same name, for logging.
    pub shadowed: Vec<String>,
    /// The directory's own marker object, when it has one.
    pub marker: Option<ListEntry>,
}

/// Collects the listing pages of directory `prefix` (empty for the mount
/// root, else ending in `/`), listed with delimiter `/`.
#[derive(Debug)]
pub struct ListingBuilder {
    prefix: String,
    defaults: AttrDefaults,
    listing: Listing,
}

impl ListingBuilder {
    pub fn new(prefix: &str, defaults: AttrDefaults) -> ListingBuilder {
        ListingBuilder {
            prefix: prefix.to_string(),
            defaults,
            listing: Listing::default(),
        }
    }

    /// Adds one page; pages may repeat a common prefix (some V1 servers do).
    pub fn add_page(&mut self, page: &ListPage) {
        self.listing
            .skipped
            .extend(page.undecodable.iter().cloned());
        for object in &page.objects {
            self.add_object(object);
        }
        for prefix in &page.common_prefixes {
            self.add_prefix(prefix);
        }
    }

    fn add_object(&mut self, object: &ListEntry) {
        let Some(rest) = object.key.strip_prefix(&self.prefix) else {
            self.listing.skipped.push(object.key.clone());
            return;
        };
        if rest.is_empty() {
            self.listing.marker = Some(object.clone());
            return;
        }
        // A server that ignored the delimiter: the first component is a
        // directory, as a common prefix would have said.
        if let Some((first, _)) = rest.split_once('/') {
            let dir = format!("{}{first}/", self.prefix);
            self.add_prefix(&dir);
            return;
        }
        if !valid_component(rest) {
            self.listing.skipped.push(object.key.clone());
            return;
        }
        if self
            .listing
            .entries
            .get(rest)
            .is_some_and(|e| e.attr.kind == EntryKind::Directory)
        {
            self.listing.shadowed.push(object.key.clone());
            return;
        }
        let attr = file_attr_from_listing(object, &self.defaults);
        self.listing.entries.insert(
            rest.to_string(),
            DirEntry {
                name: rest.to_string(),
                key: object.key.clone(),
                attr,
            },
        );
    }

    fn add_prefix(&mut self, prefix: &str) {
        let name = prefix
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_suffix('/'))
            .filter(|name| valid_component(name));
        let Some(name) = name else {
            self.listing.skipped.push(prefix.to_string());
            return;
        };
        if let Some(existing) = self.listing.entries.get(name) {
            match existing.attr.kind {
                EntryKind::Directory => return,
                _ => self.listing.shadowed.push(existing.key.clone()),
            }
        }
        self.listing.entries.insert(
            name.to_string(),
            DirEntry {
                name: name.to_string(),
                key: prefix.to_string(),
                attr: implicit_dir_attr(&self.defaults),
            },
        );
    }

    pub fn finish(self) -> Listing {
        self.listing
    }
}

/// Attributes of a file known only from a listing (subtle case 4).
pub fn file_attr_from_listing(object: &ListEntry, defaults: &AttrDefaults) -> EntryAttr {
    EntryAttr {
        kind: EntryKind::File,
        size: object.size,
        mtime: object.last_modified.unwrap_or(defaults.mount_time),
        perm: defaults.file_mode & 0o7777,
        uid: defaults.uid,
        gid: defaults.gid,
        etag: Some(object.etag.clone()),
    }
}

/// Attributes of a directory without a marker (or before its HEAD).
pub fn implicit_dir_attr(defaults: &AttrDefaults) -> EntryAttr {
    EntryAttr {
        kind: EntryKind::Directory,
        size: 0,
        mtime: defaults.mount_time,
        perm: defaults.dir_mode & 0o7777,
        uid: defaults.uid,
        gid: defaults.gid,
        etag: None,
    }
}

/// Attributes from a HEAD of `key`, with the s3fs-compatible metadata
/// applied over the defaults (subtle cases 4 and 5). A key ending in `/` is
/// a directory marker.
pub fn attr_from_head(key: &str, meta: &ObjectMeta, defaults: &AttrDefaults) -> EntryAttr {
    let mode = meta
        .metadata
        .get("mode")
        .and_then(|m| m.trim().parse::<u32>().ok());
    let is_marker = key.ends_with('/');
    let kind = if meta.object_type == ObjectType::Symlink {
        EntryKind::Symlink
    } else {
        match mode.map(|m| m & S_IFMT) {
            Some(t) if t == S_IFLNK => EntryKind::Symlink,
            Some(t) if t == S_IFDIR => EntryKind::Directory,
            _ if is_marker => EntryKind::Directory,
            _ => EntryKind::File,
        }
    };
    let default_perm = match kind {
        EntryKind::Directory => defaults.dir_mode,
        EntryKind::Symlink => 0o777,
        EntryKind::File => defaults.file_mode,
    };
    let number = |name: &str| {
        meta.metadata
            .get(name)
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    EntryAttr {
        kind,
        size: if kind == EntryKind::Directory {
            0
        } else {
            meta.size
        },
        mtime: meta
            .metadata
            .get("mtime")
            .and_then(|v| parse_unix_time(v))
            .or(meta.last_modified)
            .unwrap_or(defaults.mount_time),
        perm: mode.map(|m| m & 0o7777).unwrap_or(default_perm & 0o7777),
        uid: number("uid").unwrap_or(defaults.uid),
        gid: number("gid").unwrap_or(defaults.gid),
        etag: Some(meta.etag.clone()),
    }
}

/// What a lookup found: the entry's attributes and its key (files) or
/// prefix (directories).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub key: String,
    pub attr: EntryAttr,
}

/// Decides a lookup of `key` from the two requests run side by side: a HEAD
/// of `key` and a one-key listing of the prefix `key/` (DESIGN.md,
/// Performance). A non-empty prefix makes a directory even when `key` is
/// also an object (subtle case 2); neither gives `Ok(None)`, a negative
/// entry. Errors other than a missing key are the caller's to report.
pub fn resolve_lookup(
    key: &str,
    head: StoreResult<ObjectMeta>,
    under: StoreResult<ListPage>,
    defaults: &AttrDefaults,
) -> StoreResult<Option<Found>> {
    let dir_prefix = format!("{key}/");
    let page = under?;
    let marker = page.objects.iter().find(|o| o.key == dir_prefix);
    if marker.is_some() || !page.objects.is_empty() || !page.common_prefixes.is_empty() {
        let mut attr = implicit_dir_attr(defaults);
        if let Some(m) = marker {
            attr.mtime = m.last_modified.unwrap_or(defaults.mount_time);
            attr.etag = Some(m.etag.clone());
        }
        return Ok(Some(Found {
            key: dir_prefix,
            attr,
        }));
    }
    match head {
        Ok(meta) => Ok(Some(Found {
            key: key.to_string(),
            attr: attr_from_head(key, &meta, defaults),
        })),
        Err(StoreError::NoSuchKey { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses `seconds[.fraction]` since the Unix epoch (s3fs `mtime`).
pub fn parse_unix_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: u64 = secs.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{digits:0<9}").parse::<u32>().ok()?
    };
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever keys a listing holds: every name shown is a valid path
        /// component, and every key is shown, or the marker, or reported as
        /// skipped or shadowed; none disappears silently.
        #[test]
        fn every_listed_key_becomes_a_name_or_is_reported(
            keys in prop::collection::vec("(d/)?[a./\\x01 \\PC]{0,8}", 0..24),
            prefixes in prop::collection::vec("d/[a./\\PC]{0,6}/", 0..6),
        ) {
            let objects: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
            let dirs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
            let mut builder = ListingBuilder::new("d/", defaults());
            builder.add_page(&page(&objects, &dirs));
            let listing = builder.finish();
            for (name, entry) in &listing.entries {
                prop_assert!(valid_component(name), "{:?} shown", name);
                prop_assert!(entry.key.starts_with("d/"));
            }
            for key in keys.iter().chain(&prefixes) {
                let rest = key.strip_prefix("d/");
                let first = rest.map(|r| r.split('/').next().unwrap_or_default());
                let shown = first.is_some_and(|f| listing.entries.contains_key(f));
                let marker = rest == Some("") && listing.marker.is_some();
                // A deeper key stands for its first directory, and is
                // reported as that directory when the name cannot be one.
                let as_dir = first.map(|f| format!("d/{f}/"));
                let reported = listing.skipped.contains(key)
                    || listing.shadowed.contains(key)
                    || as_dir.is_some_and(|d| listing.skipped.contains(&d));
                prop_assert!(shown || marker || reported, "{:?} vanished", key);
            }
        }
    }
    use crate::store::Metadata;

    fn defaults() -> AttrDefaults {
        AttrDefaults {
            uid: 1000,
            gid: 100,
            file_mode: 0o644,
            dir_mode: 0o755,
            mount_time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn object(key: &str, size: u64) -> ListEntry {
        ListEntry {
            key: key.into(),
            size,
            etag: format!("etag-{key}"),
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)),
        }
    }

    fn page(objects: &[(&str, u64)], prefixes: &[&str]) -> ListPage {
        ListPage {
            objects: objects.iter().map(|(k, s)| object(k, *s)).collect(),
            common_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            next: None,
            undecodable: Vec::new(),
        }
    }

    #[test]
    fn components_that_cannot_be_names_are_refused() {
        assert!(valid_component("a b+c%20ü"));
        for bad in ["", ".", "..", "a/b", "nul\0"] {
            assert!(!valid_component(bad), "{bad:?}");
        }
        assert!(valid_component(&"x".repeat(255)));
        assert!(!valid_component(&"x".repeat(256)));
    }

    #[test]
    fn files_and_directories_come_from_one_listing() {
        let mut b = ListingBuilder::new("docs/", defaults());
        b.add_page(&page(
            &[("docs/", 0), ("docs/a.txt", 5), ("docs/b c+d.txt", 7)],
            &["docs/sub/", "docs/日本/"],
        ));
        let l = b.finish();
        let names: Vec<&str> = l.entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["a.txt", "b c+d.txt", "sub", "日本"]);
        let a = &l.entries["a.txt"];
        assert_eq!(
            (a.attr.kind, a.attr.size, a.attr.perm),
            (EntryKind::File, 5, 0o644)
        );
        assert_eq!(a.attr.etag.as_deref(), Some("etag-docs/a.txt"));
        assert_eq!(
            a.attr.mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
        );
        let sub = &l.entries["sub"];
        assert_eq!(
            (sub.attr.kind, sub.attr.perm),
            (EntryKind::Directory, 0o755)
        );
        assert_eq!(sub.key, "docs/sub/");
        assert_eq!(l.marker.as_ref().map(|m| m.key.as_str()), Some("docs/"));
        assert!(l.skipped.is_empty() && l.shadowed.is_empty());
    }

    #[test]
    fn a_directory_shadows_a_file_of_the_same_name_in_either_order() {
        for (first, second) in [(true, false), (false, true)] {
            let mut b = ListingBuilder::new("", defaults());
            let file = page(&[("clash", 3)], &[]);
            let dir = page(&[], &["clash/"]);
            b.add_page(if first { &file } else { &dir });
            b.add_page(if second { &file } else { &dir });
            let l = b.finish();
            assert_eq!(l.entries["clash"].attr.kind, EntryKind::Directory);
            assert_eq!(l.shadowed, vec!["clash".to_string()]);
        }
    }

    #[test]
    fn invalid_keys_are_skipped_and_reported() {
        let long = format!("{}/", "n".repeat(256));
        let mut b = ListingBuilder::new("", defaults());
        b.add_page(&page(
            &[("ok", 1), (".", 1), ("..", 1)],
            &["/", "./", &long],
        ));
        let l = b.finish();
        assert_eq!(l.entries.keys().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(l.skipped.len(), 5, "{:?}", l.skipped);
    }

    #[test]
    fn repeated_prefixes_and_ignored_delimiters_give_one_directory() {
        let mut b = ListingBuilder::new("", defaults());
        b.add_page(&page(&[("d/x", 1)], &["d/"]));
        b.add_page(&page(&[("d/y/z", 1)], &["d/"]));
        let l = b.finish();
        assert_eq!(l.entries.len(), 1);
        assert_eq!(l.entries["d"].attr.kind, EntryKind::Directory);
    }

    fn meta(size: u64, pairs: &[(&str, &str)], object_type: ObjectType) -> ObjectMeta {
        ObjectMeta {
            size,
            etag: "e".into(),
            last_modified: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(5)),
            metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Metadata>(),
            object_type,
            ..Default::default()
        }
    }

    #[test]
    fn s3fs_metadata_sets_mode_owner_and_time() {
        // s3fs writes st_mode in decimal: 33261 = 0o100755.
        let m = meta(
            10,
            &[
                ("mode", "33261"),
                ("uid", "0"),
                ("gid", "0"),
                ("mtime", "1709622489.5"),
            ],
            ObjectType::Normal,
        );
        let a = attr_from_head("bin/tool", &m, &defaults());
        assert_eq!(a.kind, EntryKind::File);
        assert_eq!((a.perm, a.uid, a.gid, a.size), (0o755, 0, 0, 10));
        assert_eq!(
            a.mtime,
            SystemTime::UNIX_EPOCH + Duration::new(1_709_622_489, 500_000_000)
        );
        // Without metadata: defaults and Last-Modified.
        let a = attr_from_head("plain", &meta(3, &[], ObjectType::Normal), &defaults());
        assert_eq!((a.perm, a.uid, a.gid), (0o644, 1000, 100));
        assert_eq!(a.mtime, SystemTime::UNIX_EPOCH + Duration::from_secs(5));
        // Unparsable values fall back rather than fail.
        let a = attr_from_head(
            "odd",
            &meta(3, &[("mode", "rwx"), ("uid", "-1")], ObjectType::Normal),
            &defaults(),
        );
        assert_eq!((a.perm, a.uid), (0o644, 1000));
    }

    #[test]
    fn symlinks_and_directory_markers_are_recognised_after_head() {
        // s3fs symlink: mode 41471 = 0o120777, body is the target.
        let a = attr_from_head(
            "link",
            &meta(6, &[("mode", "41471")], ObjectType::Normal),
            &defaults(),
        );
        assert_eq!((a.kind, a.size, a.perm), (EntryKind::Symlink, 6, 0o777));
        // OSS native symlink.
        let a = attr_from_head("link2", &meta(0, &[], ObjectType::Symlink), &defaults());
        assert_eq!(a.kind, EntryKind::Symlink);
        // A marker `dir/` with s3fs directory mode 16877 = 0o40755.
        let a = attr_from_head(
            "dir/",
            &meta(0, &[("mode", "16872")], ObjectType::Normal),
            &defaults(),
        );
        assert_eq!((a.kind, a.perm), (EntryKind::Directory, 0o750));
        // A marker without metadata is a directory with the default mode.
        let a = attr_from_head("dir/", &meta(0, &[], ObjectType::Normal), &defaults());
        assert_eq!((a.kind, a.perm), (EntryKind::Directory, 0o755));
    }

    #[test]
    fn lookups_combine_head_and_prefix_listing() {
        let d = defaults();
        let missing = || Err(StoreError::NoSuchKey { key: "k".into() });
        // A plain file.
        let found = resolve_lookup(
            "f",
            Ok(meta(4, &[], ObjectType::Normal)),
            Ok(page(&[], &[])),
            &d,
        )
        .unwrap();
        assert_eq!(
            found.map(|f| (f.key, f.attr.kind)),
            Some(("f".to_string(), EntryKind::File))
        );
        // An implicit directory: no object, keys below.
        let found = resolve_lookup("d", missing(), Ok(page(&[("d/x", 1)], &[])), &d)
            .unwrap()
            .unwrap();
        assert_eq!(
            (found.key.as_str(), found.attr.kind),
            ("d/", EntryKind::Directory)
        );
        // A marker gives the directory its time.
        let found = resolve_lookup("m", missing(), Ok(page(&[("m/", 0)], &[])), &d)
            .unwrap()
            .unwrap();
        assert_eq!(
            found.attr.mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
        );
        // Both an object and a prefix: the directory wins.
        let found = resolve_lookup(
            "c",
            Ok(meta(4, &[], ObjectType::Normal)),
            Ok(page(&[], &["c/sub/"])),
            &d,
        )
        .unwrap()
        .unwrap();
        assert_eq!(found.attr.kind, EntryKind::Directory);
        // Neither: a negative entry.
        assert_eq!(
            resolve_lookup("n", missing(), Ok(page(&[], &[])), &d).unwrap(),
            None
        );
        // Other failures are reported, not taken for absence.
        let denied = StoreError::AccessDenied(Default::default());
        assert_eq!(
            resolve_lookup("x", Err(denied.clone()), Ok(page(&[], &[])), &d),
            Err(denied.clone())
        );
        assert_eq!(
            resolve_lookup("x", missing(), Err(denied.clone()), &d),
            Err(denied)
        );
    }

    #[test]
    fn unix_times_parse_with_and_without_fractions() {
        assert_eq!(
            parse_unix_time("10"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );
        assert_eq!(
            parse_unix_time("10.25"),
            Some(SystemTime::UNIX_EPOCH + Duration::new(10, 250_000_000))
        );
        assert_eq!(parse_unix_time("-3"), None);
        assert_eq!(parse_unix_time("1.x"), None);
    }
}
