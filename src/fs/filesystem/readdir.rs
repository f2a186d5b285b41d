//! Reading an open directory, one window of rows at a time, so that a
//! directory of millions of objects costs the memory of one page, not of
//! its whole listing.
//!
//! A pass over a directory starts at offset 0 (`opendir`, `rewinddir`) and
//! hands the kernel windows of at most [`WINDOW`] rows, each numbered by
//! its offset in the pass. Subtle cases:
//! 1. **Two sources.** A pass starts from the cached listing when it is
//!    fresh and otherwise lists the store page by page (one ListObjectsV2
//!    per window). A cached listing is looked up again at every window;
//!    when it has meanwhile been invalidated or evicted, the pass goes on
//!    listing the store from `start-after` the last name shown, and skips
//!    names up to it. A name never sorts after its key (a directory's key
//!    only adds a `/`), so nothing after that name is missed.
//! 2. **What is cached.** A paged pass collects what it lists while the
//!    shared [`CollectBudget`] allows, and stores the complete listing at
//!    its end, unless something in the cache was invalidated since the
//!    pass began (the listing might predate that change). A directory
//!    bigger than `listing_cache_entries` is never cached: each pass lists
//!    it again, and lookups of its files HEAD them.
//! 3. **Across pages.** A file and a directory of the same name (`a` and
//!    `a/`) are shown once when they fall within a page or on neighbouring
//!    pages; thousands of keys apart in a directory too big to cache, the
//!    name may be shown twice (a limit stated in the README).
//! 4. **Seeking back.** An offset before the current window (seekdir to a
//!    telldir position) restarts the pass and skips to it.
//! 5. **Local files.** Files created here and not uploaded yet are shown
//!    after the listing, unless the listing had them.

use super::{BucketFs, DirRow, FsResult, Handle};
use crate::fs::inode::Inode;
use crate::fs::listing_cache::Collecting;
use crate::fs::namespace::{DirEntry, EntryAttr, EntryKind, Listing, ListingBuilder, NAME_MAX};
use crate::store::{ListContinuation, ListPage, ListRequest};
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

/// Most rows handed out per window (one listing page).
pub const WINDOW: usize = 1000;

/// Rows `start..start + rows.len()` of a pass over a directory.
#[derive(Clone, Debug)]
pub struct DirWindow {
    pub start: u64,
    pub rows: Arc<Vec<DirRow>>,
}

impl DirWindow {
    /// The rows at and after `offset`, each with its offset in the pass.
    pub fn from(&self, offset: u64) -> impl Iterator<Item = (u64, &DirRow)> {
        let skip = offset.saturating_sub(self.start) as usize;
        (self.start..).zip(self.rows.iter()).skip(skip)
    }

    fn end(&self) -> u64 {
        self.start + self.rows.len() as u64
    }
}

impl DirRow {
    /// The row of a child `name` (not bound to an inode yet).
    fn child(name: String, key: String, attr: EntryAttr) -> DirRow {
        DirRow {
            name,
            ino: 0,
            kind: attr.kind,
            child: Some((key, attr)),
        }
    }

    /// The row of a listed entry.
    fn of(entry: &DirEntry) -> DirRow {
        DirRow::child(entry.name.clone(), entry.key.clone(), entry.attr.clone())
    }
}

/// Where the rest of a pass comes from.
enum Source {
    /// The cached listing, after the name shown last.
    Cached {
        after: Option<String>,
    },
    /// The store, page by page.
    Paged(Box<Paging>),
    Done,
}

/// Where a pass listing the store stands.
struct Paging {
    continuation: Option<ListContinuation>,
    start_after: Option<String>,
    /// Names up to this one were shown from the cache (case 1).
    shown_up_to: Option<String>,
    /// Names of the page before (case 3).
    previous: HashSet<String>,
    /// The listing being collected for the cache (case 2).
    collect: Option<Collecting>,
}

impl Paging {
    /// Lists directory `prefix` from the start, or after the name
    /// `shown_up_to` when the cache showed the names up to it (case 1).
    fn after(prefix: &str, shown_up_to: Option<String>, collect: Option<Collecting>) -> Source {
        Source::Paged(Box::new(Paging {
            continuation: None,
            start_after: shown_up_to.as_ref().map(|name| format!("{prefix}{name}")),
            shown_up_to,
            previous: HashSet::new(),
            collect,
        }))
    }
}

/// The state of one pass over an open directory.
pub(super) struct DirPass {
    window: DirWindow,
    source: Source,
    /// Local children not seen in the listing yet (case 5).
    local: HashMap<String, Inode>,
    /// Keys whose names were removed while open.
    hidden: HashSet<String>,
    /// When the pass began (case 2).
    began: Instant,
}

impl BucketFs {
    /// Opens directory `ino`; the listing is read at the first readdir.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        self.dir_inode(ino)?;
        Ok(self.add_handle(Handle::Dir(tokio::sync::Mutex::new(None))))
    }

    /// The window of rows holding `offset` in a pass over directory `ino`
    /// (offset 0 starts a new pass, as `rewinddir` does). A window that
    /// ends at or before `offset` means the directory has no more rows.
    pub async fn readdir(&self, ino: u64, fh: u64, offset: u64) -> FsResult<DirWindow> {
        let handle = self.handle(fh)?;
        let Handle::Dir(pass) = &*handle else {
            return Err(libc::EBADF);
        };
        let dir = self.dir_inode(ino)?;
        let mut pass = pass.lock().await;
        if offset == 0 || pass.as_ref().is_none_or(|p| offset < p.window.start) {
            *pass = Some(self.begin_pass(&dir));
        }
        let Some(pass) = pass.as_mut() else {
            return Err(libc::EIO);
        };
        while offset >= pass.window.end() && !matches!(pass.source, Source::Done) {
            let rows = self.next_rows(&dir.key, pass).await?;
            pass.window = DirWindow {
                start: pass.window.end(),
                rows: Arc::new(rows),
            };
        }
        Ok(pass.window.clone())
    }

    fn begin_pass(&self, dir: &Inode) -> DirPass {
        let dot = |name: &str, ino| DirRow {
            name: name.into(),
            ino,
            kind: EntryKind::Directory,
            child: None,
        };
        let began = Instant::now();
        let cached = self.listings.lock().fresh(&dir.key).is_some();
        let source = if cached {
            Source::Cached { after: None }
        } else {
            let builder = ListingBuilder::new(&dir.key, self.config.defaults);
            Paging::after(&dir.key, None, Some(self.collect_budget.start(builder)))
        };
        DirPass {
            window: DirWindow {
                start: 0,
                rows: Arc::new(vec![dot(".", dir.ino), dot("..", dir.parent)]),
            },
            source,
            local: self.staged_children(dir.ino).into_iter().collect(),
            hidden: self.hidden.lock().keys().cloned().collect(),
            began,
        }
    }

    /// The next rows of the pass (empty only once it is done).
    async fn next_rows(&self, prefix: &str, pass: &mut DirPass) -> FsResult<Vec<DirRow>> {
        let mut rows = Vec::new();
        while rows.is_empty() {
            match &mut pass.source {
                Source::Cached { after } => {
                    let listing = self.listings.lock().fresh(prefix);
                    let Some(listing) = listing else {
                        // Case 1: gone since the pass began.
                        pass.source = Paging::after(prefix, after.take(), None);
                        continue;
                    };
                    let (window, last) =
                        window_of(&listing, after.as_deref(), &mut pass.local, &pass.hidden);
                    rows = window;
                    match last {
                        Some(last) => pass.source = Source::Cached { after: Some(last) },
                        None => pass.source = Source::Done,
                    }
                }
                Source::Paged { .. } => rows = self.next_page(prefix, pass).await?,
                Source::Done => break,
            }
            if matches!(pass.source, Source::Done) {
                rows.extend(
                    pass.local
                        .drain()
                        .map(|(name, inode)| DirRow::child(name, inode.key, inode.attr)),
                );
                break;
            }
        }
        Ok(rows)
    }

    /// Lists one page of the store into rows.
    async fn next_page(&self, prefix: &str, pass: &mut DirPass) -> FsResult<Vec<DirRow>> {
        let Source::Paged(paging) = &mut pass.source else {
            return Ok(Vec::new());
        };
        let Paging {
            continuation,
            start_after,
            shown_up_to,
            previous,
            collect,
        } = &mut **paging;
        if continuation.is_none() && start_after.is_none() {
            self.await_recovered(prefix).await;
        }
        let (page, listing) = self
            .list_page(prefix, continuation.take(), start_after.take())
            .await?;
        if collect.as_mut().is_some_and(|c| !c.add_page(&page)) {
            *collect = None;
        }
        let rows = listing
            .entries
            .values()
            .filter(|e| !previous.contains(&e.name))
            .filter(|e| shown_up_to.as_ref().is_none_or(|up_to| e.name > *up_to))
            .filter(|e| !pass.hidden.contains(&e.key))
            .map(|e| {
                pass.local.remove(&e.name);
                DirRow::of(e)
            })
            .collect();
        *previous = listing.entries.into_keys().collect();
        match page.next {
            Some(next) => *continuation = Some(next),
            None => {
                if let Some(collect) = collect.take() {
                    let done = Arc::new(collect.finish());
                    self.listings
                        .lock()
                        .put(prefix, done, pass.began, self.config.dir_ttl);
                }
                pass.source = Source::Done;
            }
        }
        Ok(rows)
    }

    /// One page of the listing of directory `prefix`, and what it shows
    /// (odd keys logged).
    pub(super) async fn list_page(
        &self,
        prefix: &str,
        continuation: Option<ListContinuation>,
        start_after: Option<String>,
    ) -> FsResult<(ListPage, Listing)> {
        let req = ListRequest {
            prefix: prefix.to_string(),
            delimiter: Some("/".into()),
            continuation,
            start_after,
            max_keys: None,
        };
        let page = self
            .store
            .list_objects(&req)
            .await
            .map_err(|e| self.fail(&format!("listing {prefix:?}"), e))?;
        let mut builder = ListingBuilder::new(prefix, self.config.defaults);
        builder.add_page(&page);
        let listing = builder.finish();
        self.log_odd_keys(&listing);
        Ok((page, listing))
    }

    /// Logs, once per key, keys that a listing could not show.
    fn log_odd_keys(&self, listing: &Listing) {
        for key in &listing.skipped {
            self.log_once(key, || {
                format!("key {key:?} cannot be shown as a path (an empty, '.' or '..' component, over {NAME_MAX} bytes, a NUL byte, or not UTF-8): skipped")
            });
        }
        for key in &listing.shadowed {
            self.log_once(key, || {
                format!("object {key:?} is hidden by a directory of the same name")
            });
        }
    }

    /// Binds a child row for READDIRPLUS (one kernel lookup, undone with
    /// [`BucketFs::forget`] if the reply buffer refuses it).
    pub fn bind_row(&self, parent: u64, row: &DirRow) -> super::Entry {
        match &row.child {
            Some((key, attr)) => self.bind(
                parent,
                &row.name,
                key.clone(),
                attr.clone(),
                crate::fs::inode::AttrSource::Listing,
                false,
            ),
            None => {
                let attr = self
                    .inodes
                    .lock()
                    .get(row.ino)
                    .map(|i| i.attr.clone())
                    .unwrap_or_else(|| {
                        crate::fs::namespace::implicit_dir_attr(&self.config.defaults)
                    });
                super::Entry {
                    ino: row.ino,
                    ttl: self.config.dir_ttl,
                    attr,
                }
            }
        }
    }

    /// A stable inode number for plain READDIR rows: the bound inode if
    /// the name has one, else a number that only has to be unique within
    /// the reply (the kernel looks the name up before using it).
    pub fn row_ino(&self, parent: u64, row: &DirRow, offset: u64) -> u64 {
        if row.child.is_none() {
            return row.ino;
        }
        self.inodes
            .lock()
            .child(parent, &row.name)
            .map(|i| i.ino)
            .unwrap_or(u64::MAX - offset)
    }
}

/// The rows among the next [`WINDOW`] names of `listing` after `after`,
/// and the last of those names (`None` at the end). Hidden names are
/// passed over but still move the pass on.
fn window_of(
    listing: &Listing,
    after: Option<&str>,
    local: &mut HashMap<String, Inode>,
    hidden: &HashSet<String>,
) -> (Vec<DirRow>, Option<String>) {
    let from = match after {
        Some(name) => Bound::Excluded(name),
        None => Bound::Unbounded,
    };
    let mut rows = Vec::new();
    let mut last = None;
    for (_, entry) in listing
        .entries
        .range::<str, _>((from, Bound::Unbounded))
        .take(WINDOW)
    {
        local.remove(&entry.name);
        last = Some(entry.name.clone());
        if !hidden.contains(&entry.key) {
            rows.push(DirRow::of(entry));
        }
    }
    (rows, last)
}
