//! The cache of complete directory listings, for lookups and repeated
//! readdirs. It is bounded by the entries it holds, across directories
//! (the `listing_cache_entries` option), not by a count of directories: a
//! listing costs memory per entry, and one directory of a million objects
//! would otherwise fill any count-bounded cache. A directory with more
//! entries than the whole capacity is never cached; reading it costs a
//! listing each time (readdir.rs reads it a page at a time).
//!
//! Each listing counts as its entries plus one, so many empty directories
//! are bounded too. A listing whose reading began before a change this
//! mount made in its directory (a create, unlink or rename) is not stored:
//! it may predate the change. Changes are remembered per directory, the
//! last [`CHANGES_KEPT`] of them; a listing older than a forgotten one is
//! refused too.

use crate::fs::namespace::{Listing, ListingBuilder};
use crate::store::ListPage;
use lru::LruCache;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Cached {
    listing: Arc<Listing>,
    expires: Instant,
}

/// Listings by directory prefix, least recently used evicted first.
pub struct ListingCache {
    lru: LruCache<String, Cached>,
    /// Entries held, counted as [`weight`] of each listing.
    held: usize,
    capacity: usize,
    /// When each directory was last changed here (bounded)...
    changed: LruCache<String, Instant>,
    /// ...and the latest change forgotten (or made to many at once).
    floor: Instant,
}

/// Directories whose last change is remembered.
pub const CHANGES_KEPT: usize = 4096;

fn weight(listing: &Listing) -> usize {
    listing.entries.len() + 1
}

impl ListingCache {
    /// A cache of at most `capacity` entries (0: nothing is cached).
    pub fn new(capacity: usize) -> ListingCache {
        ListingCache {
            lru: LruCache::unbounded(),
            held: 0,
            capacity,
            changed: LruCache::new(
                std::num::NonZeroUsize::new(CHANGES_KEPT).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            floor: Instant::now(),
        }
    }

    /// The listing of `prefix` while it is fresh.
    pub fn fresh(&mut self, prefix: &str) -> Option<Arc<Listing>> {
        let cached = self.lru.get(prefix)?;
        (cached.expires > Instant::now()).then(|| cached.listing.clone())
    }

    /// How many entries the listing of `prefix` had when it expired (an
    /// expired listing is kept, within the bound, for this question: is
    /// the directory small enough to list again instead of a lookup?).
    pub fn expired_entries(&self, prefix: &str) -> Option<usize> {
        let cached = self.lru.peek(prefix)?;
        (cached.expires <= Instant::now()).then(|| cached.listing.entries.len())
    }

    /// Whether directory `prefix` may have changed here since `read_at`.
    fn changed_since(&self, prefix: &str, read_at: Instant) -> bool {
        read_at <= self.floor || self.changed.peek(prefix).is_some_and(|t| *t >= read_at)
    }

    fn mark_changed(&mut self, prefix: &str) {
        let now = Instant::now();
        if let Some((evicted, at)) = self.changed.push(prefix.to_string(), now)
            && evicted != prefix
        {
            self.floor = self.floor.max(at);
        }
    }

    /// Stores the listing of `prefix`, whose reading began at `read_at`,
    /// for `ttl`. Returns whether it was kept: not when the directory
    /// changed here since, nor when it is too big.
    pub fn put(
        &mut self,
        prefix: &str,
        listing: Arc<Listing>,
        read_at: Instant,
        ttl: Duration,
    ) -> bool {
        let weight = weight(&listing);
        if self.changed_since(prefix, read_at) || weight > self.capacity {
            return false;
        }
        self.remove(prefix);
        self.held += weight;
        self.lru.put(
            prefix.to_string(),
            Cached {
                listing,
                expires: read_at + ttl,
            },
        );
        // The new listing is the most recently used: others go first.
        self.evict_over_capacity();
        true
    }

    fn evict_over_capacity(&mut self) {
        while self.held > self.capacity {
            match self.lru.pop_lru() {
                Some((_, old)) => self.held -= weight(&old.listing),
                None => break,
            }
        }
    }

    /// Applies a change this mount made in directory `prefix` to its
    /// cached listing, if there is one, instead of dropping it: the next
    /// lookup of a new name in the directory still needs no request.
    pub fn update(&mut self, prefix: &str, change: impl FnOnce(&mut Listing)) {
        self.mark_changed(prefix);
        let Some(cached) = self.lru.get_mut(prefix) else {
            return;
        };
        let before = weight(&cached.listing);
        change(Arc::make_mut(&mut cached.listing));
        let after = weight(&cached.listing);
        self.held = self.held + after - before;
        if after > self.capacity {
            self.remove(prefix);
        }
        self.evict_over_capacity();
    }

    /// Forgets the listing of `prefix` (its content changed).
    pub fn invalidate(&mut self, prefix: &str) {
        self.mark_changed(prefix);
        self.remove(prefix);
    }

    /// Forgets every listing whose prefix `stale` selects.
    pub fn invalidate_where(&mut self, stale: impl Fn(&str) -> bool) {
        self.floor = Instant::now();
        let keys: Vec<String> = self
            .lru
            .iter()
            .filter(|(k, _)| stale(k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.remove(&k);
        }
    }

    fn remove(&mut self, prefix: &str) {
        if let Some(old) = self.lru.pop(prefix) {
            self.held -= weight(&old.listing);
        }
    }

    /// Entries held now (for tests and stats).
    pub fn held(&self) -> usize {
        self.held
    }
}

/// The entries that readdir passes may hold while collecting listings to
/// store, all passes together: at most the cache's capacity, so a hundred
/// directories read at once cannot hold a hundred caches' worth.
#[derive(Clone, Debug)]
pub struct CollectBudget {
    used: Arc<AtomicUsize>,
    capacity: usize,
}

impl CollectBudget {
    pub fn new(capacity: usize) -> CollectBudget {
        CollectBudget {
            used: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// Starts collecting a listing into `builder`.
    pub fn start(&self, builder: ListingBuilder) -> Collecting {
        Collecting {
            builder: Some(builder),
            reserved: 0,
            budget: self.clone(),
        }
    }

    fn reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= self.capacity).then_some(used + n)
            })
            .is_ok()
    }

    /// Entries reserved now (for tests).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// A listing being collected page by page within the shared budget; its
/// reservation is returned when it is finished or dropped.
#[derive(Debug)]
pub struct Collecting {
    builder: Option<ListingBuilder>,
    reserved: usize,
    budget: CollectBudget,
}

impl Collecting {
    /// Adds a page; `false` when the budget has no room for it (the
    /// listing is then too big to keep and should be dropped).
    pub fn add_page(&mut self, page: &ListPage) -> bool {
        let n = page.objects.len() + page.common_prefixes.len() + 1;
        if !self.budget.reserve(n) {
            return false;
        }
        self.reserved += n;
        if let Some(builder) = &mut self.builder {
            builder.add_page(page);
        }
        true
    }

    pub fn finish(mut self) -> Listing {
        self.builder
            .take()
            .map(ListingBuilder::finish)
            .unwrap_or_default()
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.reserved, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::namespace::{AttrDefaults, DirEntry, EntryKind, implicit_dir_attr};

    fn listing(n: usize) -> Arc<Listing> {
        let mut l = Listing::default();
        let attr = implicit_dir_attr(&AttrDefaults {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            mount_time: std::time::SystemTime::UNIX_EPOCH,
        });
        for i in 0..n {
            let name = format!("e{i}");
            l.entries.insert(
                name.clone(),
                DirEntry {
                    key: format!("{name}/"),
                    name,
                    attr: attr.clone(),
                },
            );
        }
        assert!(
            l.entries
                .values()
                .all(|e| e.attr.kind == EntryKind::Directory)
        );
        Arc::new(l)
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn entries_not_directories_are_bounded() {
        let mut c = ListingCache::new(100);
        let now = Instant::now() + Duration::from_millis(1);
        assert!(c.put("a/", listing(40), now, TTL));
        assert!(c.put("b/", listing(40), now, TTL));
        assert_eq!(c.held(), 82);
        // A third evicts the least recently used: a/ was not used since.
        assert!(c.fresh("a/").is_some());
        assert!(c.put("c/", listing(40), now, TTL));
        assert!(c.fresh("b/").is_none());
        assert!(c.fresh("a/").is_some() && c.fresh("c/").is_some());
        assert!(c.held() <= 100);
        // Larger than the whole cache: never stored, nothing evicted.
        assert!(!c.put("huge/", listing(100), now, TTL));
        assert!(c.fresh("a/").is_some());
        // Many empty directories count too.
        for i in 0..1000 {
            c.put(&format!("empty{i}/"), listing(0), now, TTL);
        }
        assert!(c.held() <= 100, "{}", c.held());
        let mut none = ListingCache::new(0);
        assert!(!none.put("a/", listing(0), now, TTL));
    }

    #[test]
    fn stale_reads_and_expired_listings_are_not_served() {
        let mut c = ListingCache::new(1000);
        let began = Instant::now();
        c.invalidate("a/");
        assert!(!c.put("a/", listing(3), began, TTL), "read before a change");
        assert!(c.put("b/", listing(3), began, TTL), "another directory");
        assert!(c.put("a/", listing(3), Instant::now(), TTL));
        c.invalidate_where(|p| p.starts_with('a'));
        assert!(c.fresh("a/").is_none() && c.fresh("b/").is_some());
        assert!(!c.put("b/", listing(3), began, TTL), "older than a rename");
        assert_eq!(c.held(), 4);
        assert!(c.put("old/", listing(1), Instant::now(), Duration::ZERO));
        assert!(c.fresh("old/").is_none(), "expired");
        assert_eq!(c.expired_entries("old/"), Some(1), "kept, for its size");
        assert_eq!(c.expired_entries("b/"), None);
        assert!(c.put("old/", listing(2), Instant::now(), TTL));
        assert_eq!(c.expired_entries("old/"), None, "fresh again");
        assert_eq!(c.held(), 7);
        // Changes to more directories than are remembered: the oldest
        // forgotten one still refuses listings read before it.
        let before = Instant::now();
        for i in 0..CHANGES_KEPT + 1 {
            c.update(&format!("d{i}/"), |_| {});
        }
        assert!(!c.put("d0/", listing(1), before, TTL));
        assert!(c.put("d0/", listing(1), Instant::now(), TTL));
    }

    #[test]
    fn updates_change_the_cached_listing_in_place_within_the_bound() {
        let mut c = ListingCache::new(10);
        let now = Instant::now() + Duration::from_millis(1);
        assert!(c.put("a/", listing(3), now, TTL));
        let added = listing(1).entries.values().next().unwrap().clone();
        let began = Instant::now();
        c.update("a/", |l| {
            l.entries.insert("new".into(), added.clone());
        });
        assert!(
            !c.put("a/", listing(3), began, TTL),
            "read before the change"
        );
        assert_eq!(c.fresh("a/").unwrap().entries.len(), 4);
        assert_eq!(c.held(), 5);
        c.update("a/", |l| {
            l.entries.remove("e0");
        });
        assert_eq!(c.held(), 4);
        // Grown past the whole capacity: dropped.
        c.update("a/", |l| {
            for i in 0..20 {
                l.entries.insert(format!("x{i}"), added.clone());
            }
        });
        assert!(c.fresh("a/").is_none());
        assert_eq!(c.held(), 0);
        // Nothing cached: nothing to change.
        c.update("b/", |l| l.entries.clear());
        assert!(c.fresh("b/").is_none());
    }

    #[test]
    fn collecting_passes_share_one_budget() {
        let defaults = AttrDefaults {
            uid: 0,
            gid: 0,
            file_mode: 0o644,
            dir_mode: 0o755,
            mount_time: std::time::SystemTime::UNIX_EPOCH,
        };
        let page = |n: usize| ListPage {
            common_prefixes: (0..n).map(|i| format!("d/{i}/")).collect(),
            ..ListPage::default()
        };
        let budget = CollectBudget::new(100);
        let mut a = budget.start(ListingBuilder::new("d/", defaults));
        let mut b = budget.start(ListingBuilder::new("d/", defaults));
        assert!(a.add_page(&page(60)));
        assert!(!b.add_page(&page(60)), "over the shared budget");
        assert!(b.add_page(&page(30)));
        assert_eq!(budget.used(), 92);
        drop(b);
        assert_eq!(budget.used(), 61);
        assert_eq!(a.finish().entries.len(), 60);
        assert_eq!(budget.used(), 0, "returned when finished");
    }
}
