//! The inode table: which inode number stands for which key, with the
//! attributes last seen for it and the kernel's lookup count.
//!
//! Subtle cases:
//! 1. **Numbers are never reused.** A fresh number per (parent, name, kind)
//!    binding, from a counter, so the generation is always 0 and a stale
//!    kernel handle can never reach another object.
//! 2. **A name that changes kind gets a new inode.** A file replaced by a
//!    directory of the same name (or the reverse) is rebound to a new number;
//!    the old inode lives on, unreachable by name, until the kernel forgets
//!    it (open handles keep working on what they opened).
//! 3. **Lookup counts.** Every entry handed to the kernel (lookup, each
//!    READDIRPLUS entry it accepts) adds one; `forget` subtracts. An inode at
//!    zero is dropped, except the root, which the kernel never looks up.
//! 4. **Listings do not erase what a HEAD learnt.** A listing knows size,
//!    mtime and ETag only; when it shows an object with the ETag a HEAD
//!    already described, the HEAD's attributes (mode, owner, symlink) stay.

use crate::fs::namespace::{EntryAttr, EntryKind};
use std::collections::HashMap;
use std::time::Instant;

/// The inode number of the mount root (FUSE_ROOT_ID).
pub const ROOT_INO: u64 = 1;

/// Where an inode's attributes came from (subtle case 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrSource {
    /// A listing page or the mount defaults: no object metadata.
    Listing,
    /// A HEAD of the object: metadata applied.
    Head,
}

/// One inode.
#[derive(Clone, Debug)]
pub struct Inode {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    /// Object key of a file or symlink; prefix ending in `/` of a directory
    /// (the mount prefix, possibly empty, for the root).
    pub key: String,
    pub attr: EntryAttr,
    pub source: AttrSource,
    /// An OSS/COS native symlink (read with GetSymlink, not GetObject).
    pub native_symlink: bool,
    /// The attributes are trusted until then.
    pub expires: Instant,
    /// The ETag this inode was last opened at: the kernel's cached pages
    /// of the file belong to that version.
    pub opened_etag: Option<String>,
    lookups: u64,
}

/// What a caller knows about a child, to bind it to an inode.
#[derive(Clone, Debug)]
pub struct Binding {
    pub key: String,
    pub attr: EntryAttr,
    pub source: AttrSource,
    pub native_symlink: bool,
    pub expires: Instant,
}

/// The table. Callers hold it behind a mutex and never across I/O.
#[derive(Debug)]
pub struct InodeTable {
    inodes: HashMap<u64, Inode>,
    children: HashMap<(u64, String), u64>,
    next: u64,
}

impl InodeTable {
    /// A table holding only the root, a directory at `root_key`.
    pub fn new(root_key: &str, root_attr: EntryAttr) -> InodeTable {
        let root = Inode {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            key: root_key.to_string(),
            attr: root_attr,
            source: AttrSource::Listing,
            native_symlink: false,
            expires: far_future(),
            opened_etag: None,
            lookups: 1,
        };
        InodeTable {
            inodes: HashMap::from([(ROOT_INO, root)]),
            children: HashMap::new(),
            next: ROOT_INO + 1,
        }
    }

    pub fn get(&self, ino: u64) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    /// The inode bound to `name` in `parent`, if any.
    pub fn child(&self, parent: u64, name: &str) -> Option<&Inode> {
        self.children
            .get(&(parent, name.to_string()))
            .and_then(|ino| self.inodes.get(ino))
    }

    /// Binds `name` in `parent` and counts one kernel lookup; returns the
    /// inode as it now is (subtle cases 2 and 4).
    pub fn bind(&mut self, parent: u64, name: &str, b: Binding) -> Inode {
        let slot = (parent, name.to_string());
        let existing = self.children.get(&slot).copied();
        if let Some(ino) = existing
            && let Some(inode) = self.inodes.get_mut(&ino)
        {
            // A listing cannot tell a symlink from a file: the same object
            // (same ETag) keeps what a HEAD learnt, kind included.
            let keep_head = b.source == AttrSource::Listing
                && inode.source == AttrSource::Head
                && inode.attr.etag.is_some()
                && inode.attr.etag == b.attr.etag;
            if !keep_head && inode.attr.kind != b.attr.kind {
                return self.bind_new(slot, b);
            }
            if !keep_head {
                inode.attr = b.attr;
                inode.source = b.source;
                inode.native_symlink = b.native_symlink;
            }
            inode.key = b.key;
            inode.expires = b.expires;
            inode.lookups += 1;
            return inode.clone();
        }
        self.bind_new(slot, b)
    }

    /// A new inode for `slot`, replacing whatever was bound there.
    fn bind_new(&mut self, slot: (u64, String), b: Binding) -> Inode {
        let ino = self.next;
        self.next += 1;
        let inode = Inode {
            ino,
            parent: slot.0,
            name: slot.1.clone(),
            key: b.key,
            attr: b.attr,
            source: b.source,
            native_symlink: b.native_symlink,
            expires: b.expires,
            opened_etag: None,
            lookups: 1,
        };
        self.children.insert(slot, ino);
        self.inodes.insert(ino, inode.clone());
        inode
    }

    /// Counts one more kernel lookup of `ino` and returns it.
    pub fn add_lookup(&mut self, ino: u64) -> Option<Inode> {
        let inode = self.inodes.get_mut(&ino)?;
        inode.lookups += 1;
        Some(inode.clone())
    }

    /// Removes the name `name` of `parent` (unlink, rmdir); the inode lives
    /// on for open handles until the kernel forgets it. Returns it.
    pub fn unbind(&mut self, parent: u64, name: &str) -> Option<u64> {
        self.children.remove(&(parent, name.to_string()))
    }

    /// Moves `ino` to `name` in `parent` under `key` (rename); whatever was
    /// bound there loses its name.
    pub fn move_to(&mut self, ino: u64, parent: u64, name: &str, key: String) {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        let old = (inode.parent, inode.name.clone());
        inode.parent = parent;
        inode.name = name.to_string();
        inode.key = key;
        if self.children.get(&old) == Some(&ino) {
            self.children.remove(&old);
        }
        self.children.insert((parent, name.to_string()), ino);
    }

    /// Rewrites the keys of every inode under directory prefix `from` to
    /// lie under `to` instead (a renamed directory's descendants).
    pub fn rekey_under(&mut self, from: &str, to: &str) {
        for inode in self.inodes.values_mut() {
            if let Some(rest) = inode.key.strip_prefix(from) {
                inode.key = format!("{to}{rest}");
            }
        }
    }

    /// Sets the attributes of `ino` as the filesystem itself changed them
    /// (a write path operation), trusted until `expires`.
    pub fn set_attr(&mut self, ino: u64, attr: EntryAttr, expires: Instant) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.attr = attr;
            inode.source = AttrSource::Head;
            inode.expires = expires;
        }
    }

    /// Replaces the attributes of `ino` after a refresh (getattr, open).
    pub fn refresh(&mut self, ino: u64, attr: EntryAttr, native_symlink: bool, expires: Instant) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.attr = attr;
            inode.source = AttrSource::Head;
            inode.native_symlink = native_symlink;
            inode.expires = expires;
        }
    }

    /// Records that `ino` is being opened at `etag`; true when it was last
    /// opened at the same ETag, so the kernel's cached pages are still
    /// those of this version.
    pub fn note_open(&mut self, ino: u64, etag: &str) -> bool {
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return false;
        };
        let same = inode.opened_etag.as_deref() == Some(etag);
        inode.opened_etag = Some(etag.to_string());
        same
    }

    /// The kernel forgot `n` lookups of `ino` (subtle case 3).
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let Some(inode) = self.inodes.get_mut(&ino) else {
            return;
        };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups > 0 {
            return;
        }
        let inode = self.inodes.remove(&ino).expect("present above");
        let slot = (inode.parent, inode.name);
        if self.children.get(&slot) == Some(&ino) {
            self.children.remove(&slot);
        }
    }

    /// How many inodes the table holds (root included).
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
    }
}

/// A time that never comes (the root's attributes never expire).
fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Whether `kind` is a directory (helper for callers matching on attrs).
pub fn is_dir(attr: &EntryAttr) -> bool {
    attr.kind == EntryKind::Directory
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn attr(kind: EntryKind, etag: &str, perm: u32) -> EntryAttr {
        EntryAttr {
            kind,
            size: 3,
            mtime: SystemTime::UNIX_EPOCH,
            perm,
            uid: 0,
            gid: 0,
            etag: Some(etag.to_string()),
        }
    }

    fn binding(key: &str, attr: EntryAttr, source: AttrSource) -> Binding {
        Binding {
            key: key.into(),
            attr,
            source,
            native_symlink: false,
            expires: Instant::now() + Duration::from_secs(1),
        }
    }

    fn table() -> InodeTable {
        InodeTable::new("", attr(EntryKind::Directory, "", 0o755))
    }

    #[test]
    fn same_name_same_kind_keeps_its_number_and_counts_lookups() {
        let mut t = table();
        let a = t.bind(
            ROOT_INO,
            "f",
            binding("f", attr(EntryKind::File, "e1", 0o644), AttrSource::Listing),
        );
        let b = t.bind(
            ROOT_INO,
            "f",
            binding("f", attr(EntryKind::File, "e2", 0o644), AttrSource::Listing),
        );
        assert_eq!(a.ino, b.ino);
        assert_eq!(b.attr.etag.as_deref(), Some("e2"));
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_some(), "one lookup left");
        t.forget(a.ino, 1);
        assert!(t.get(a.ino).is_none());
        assert!(t.child(ROOT_INO, "f").is_none());
    }

    #[test]
    fn a_name_that_changes_kind_gets_a_new_inode_and_the_old_one_lives_on() {
        let mut t = table();
        let file = t.bind(
            ROOT_INO,
            "x",
            binding("x", attr(EntryKind::File, "e", 0o644), AttrSource::Head),
        );
        let dir = t.bind(
            ROOT_INO,
            "x",
            binding(
                "x/",
                attr(EntryKind::Directory, "", 0o755),
                AttrSource::Listing,
            ),
        );
        assert_ne!(file.ino, dir.ino);
        assert_eq!(t.child(ROOT_INO, "x").unwrap().ino, dir.ino);
        assert_eq!(t.get(file.ino).unwrap().key, "x");
        // Forgetting the old inode must not unbind the new one.
        t.forget(file.ino, 1);
        assert_eq!(t.child(ROOT_INO, "x").unwrap().ino, dir.ino);
    }

    #[test]
    fn a_listing_with_the_same_etag_keeps_head_metadata() {
        let mut t = table();
        let head = t.bind(
            ROOT_INO,
            "s",
            binding("s", attr(EntryKind::File, "e", 0o600), AttrSource::Head),
        );
        let listed = t.bind(
            ROOT_INO,
            "s",
            binding("s", attr(EntryKind::File, "e", 0o644), AttrSource::Listing),
        );
        assert_eq!(listed.ino, head.ino);
        assert_eq!(listed.attr.perm, 0o600);
        // A new ETag means a new object: the listing wins.
        let changed = t.bind(
            ROOT_INO,
            "s",
            binding("s", attr(EntryKind::File, "f", 0o644), AttrSource::Listing),
        );
        assert_eq!(changed.attr.perm, 0o644);
        assert_eq!(changed.source, AttrSource::Listing);
    }

    #[test]
    fn unbind_move_and_rekey() {
        let mut t = table();
        let d = t.bind(
            ROOT_INO,
            "d",
            binding(
                "d/",
                attr(EntryKind::Directory, "", 0o755),
                AttrSource::Listing,
            ),
        );
        let f = t.bind(
            d.ino,
            "f",
            binding(
                "d/f",
                attr(EntryKind::File, "e", 0o644),
                AttrSource::Listing,
            ),
        );
        let g = t.bind(
            ROOT_INO,
            "g",
            binding("g", attr(EntryKind::File, "e", 0o644), AttrSource::Listing),
        );
        // Rename g over d/f: f loses its name, g takes it.
        t.move_to(g.ino, d.ino, "f", "d/f".into());
        assert_eq!(t.child(d.ino, "f").unwrap().ino, g.ino);
        assert!(t.child(ROOT_INO, "g").is_none());
        assert!(t.get(f.ino).is_some(), "f lives on until forgotten");
        t.rekey_under("d/", "e/");
        assert_eq!(t.get(g.ino).unwrap().key, "e/f");
        assert_eq!(t.get(d.ino).unwrap().key, "e/");
        assert_eq!(t.unbind(d.ino, "f"), Some(g.ino));
        assert!(t.child(d.ino, "f").is_none());
    }

    #[test]
    fn reopening_at_the_same_etag_keeps_the_page_cache() {
        let mut t = table();
        let f = t.bind(
            ROOT_INO,
            "f",
            binding("f", attr(EntryKind::File, "e1", 0o644), AttrSource::Head),
        );
        assert!(!t.note_open(f.ino, "e1"), "first open: nothing cached");
        assert!(t.note_open(f.ino, "e1"));
        assert!(!t.note_open(f.ino, "e2"), "another version");
        assert!(t.note_open(f.ino, "e2"));
    }

    #[test]
    fn the_root_is_never_forgotten() {
        let mut t = table();
        t.forget(ROOT_INO, 10);
        assert!(t.get(ROOT_INO).is_some());
        assert_eq!(t.len(), 1);
    }
}
