//! The upload planner: given what a staged file holds and what the bucket
//! can do, the cheapest way to make the object equal the file. Pure: no
//! I/O, so every choice is unit-tested here; `upload.rs` carries plans out.
//!
//! The file's content is described by a [`Snapshot`]: its size, the base
//! object it was derived from (if any), `base_valid` (bytes below it that
//! were not written still come from the base), and the dirty ranges held by
//! the staging file. The choices, in order:
//!
//! 1. **Metadata only** (nothing written, only mode/owner/times/xattrs
//!    changed): a CopyObject of the object onto itself with the metadata
//!    replaced, no data moved.
//! 2. **OBS parallel file system**: truncate if the file was cut below the
//!    base's size, then modify-at-offset each dirty range. No copy at all.
//! 3. **Pure append** to an appendable object (OSS/OBS/COS AppendObject):
//!    only the new bytes travel, whatever the file's size.
//! 4. **Whole file local** (new, or overwritten from offset 0): a new file
//!    up to `append_create_max` on a dialect with AppendObject is created by
//!    an append at position 0, so it stays appendable; otherwise one
//!    PutObject up to `put_max`, else a multipart upload of all parts.
//! 5. **Part of the file changed** and the object is large enough for
//!    multipart copy: unchanged runs of at least `copy_min` bytes are kept
//!    server-side with UploadPartCopy, the rest is uploaded (reading the
//!    base for the unchanged bytes that share a part with changed ones).
//!    Appending to a large normal object is the special case of one copy
//!    run followed by the new bytes.
//! 6. Otherwise (small object, or no part copy): the whole content, with
//!    the unchanged bytes read from the base, in one PutObject (or a
//!    multipart upload past `put_max`).
//!
//! Subtle cases:
//! 1. **Part limits.** Every part but the last is at least 5 MiB
//!    ([`MIN_PART`]); a copy part is at most 5 GiB; an upload has at most
//!    10,000 parts. A short upload run followed by a copy run borrows the
//!    copy run's first bytes to reach 5 MiB (or swallows the run when what
//!    would be left is too short to be a part of its own).
//! 2. **Growing parts.** Upload parts are `part_size` while that keeps the
//!    count within 10,000; beyond, each range is split into parts just big
//!    enough, so a 5 TiB file still fits.
//! 3. **Appendable bases are copied like others.** The OSS reference says
//!    both "Appendable objects cannot be copied" (8.1.4 AppendObject) and,
//!    more precisely, that they cannot be copied in *versioned* buckets
//!    (8.1.3 CopyObject, Limits); mounts of versioned buckets are not
//!    supported for writing, so choice 5 treats them as any base.
//! 4. **Metadata and appends.** An append carries no metadata, so a file
//!    whose metadata must change too (`meta_changed`) is not a pure append.

use crate::staging::journal::BaseObject;
use std::ops::Range;

/// Smallest part but the last (S3, OSS, OBS, COS).
pub const MIN_PART: u64 = 5 << 20;
/// Largest part, uploaded or copied (S3, OSS, OBS, COS).
pub const MAX_PART: u64 = 5 << 30;
/// Most parts of one upload.
pub const MAX_PARTS: u64 = 10_000;

/// What a staged file holds, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub size: u64,
    pub base: Option<BaseObject>,
    pub base_valid: u64,
    /// Ascending, disjoint, non-empty ranges within `0..size`.
    pub dirty: Vec<Range<u64>>,
    /// The metadata differs from the base's.
    pub meta_changed: bool,
}

/// What the bucket can do and how big requests may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanLimits {
    pub append: bool,
    pub modify_at_offset: bool,
    pub upload_part_copy: bool,
    /// Preferred upload part size (`part_size`).
    pub part_size: u64,
    /// Largest single PutObject.
    pub put_max: u64,
    /// Largest new file created with AppendObject (choice 4).
    pub append_create_max: u64,
    /// Shortest unchanged run worth a copy part (choice 5).
    pub copy_min: u64,
}

/// One part of a multipart upload, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Upload these bytes of the file (dirty ones from staging, the others
    /// read from the base).
    Upload(Range<u64>),
    /// UploadPartCopy of this range of the base.
    Copy(Range<u64>),
}

impl Part {
    pub fn range(&self) -> &Range<u64> {
        match self {
            Part::Upload(r) | Part::Copy(r) => r,
        }
    }
}

/// How to make the object equal the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to do: the object already is the file.
    Nothing,
    /// CopyObject onto itself with the new metadata.
    Metadata,
    /// One PutObject of the whole file.
    Put,
    /// AppendObject of `range`, at `range.start` (0 creates the object).
    Append(Range<u64>),
    /// A multipart upload of these parts.
    Multipart(Vec<Part>),
    /// OBS PFS: truncate to `truncate` first when set, then write `writes`
    /// at their offsets (ascending, each starting at or before the
    /// object's length by then).
    Modify {
        truncate: Option<u64>,
        writes: Vec<Range<u64>>,
    },
}

/// The plan for `snap` under `limits` (see the module doc for the order).
pub fn plan(snap: &Snapshot, limits: &PlanLimits) -> Plan {
    let size = snap.size;
    let whole_local = covers(&snap.dirty, 0..size);
    if let Some(base) = &snap.base {
        let unchanged = snap.dirty.is_empty() && snap.base_valid == base.size && size == base.size;
        if unchanged {
            return if snap.meta_changed {
                Plan::Metadata
            } else {
                Plan::Nothing
            };
        }
        // 2. OBS PFS: native writes in place.
        if limits.modify_at_offset && !whole_local {
            return Plan::Modify {
                truncate: (snap.base_valid < base.size).then_some(snap.base_valid),
                writes: snap.dirty.clone(),
            };
        }
        // 3. Pure append.
        let pure_append = snap.base_valid == base.size
            && snap.dirty.len() == 1
            && snap.dirty[0] == (base.size..size)
            && !snap.meta_changed;
        if pure_append && base.appendable && limits.append {
            return Plan::Append(base.size..size);
        }
    }
    // 4. Whole file local.
    if whole_local {
        if snap.base.is_none() && limits.append && size <= limits.append_create_max {
            return Plan::Append(0..size);
        }
        if size <= limits.put_max {
            return Plan::Put;
        }
        return Plan::Multipart(upload_parts(0..size, limits.part_size, true));
    }
    // 5. Part of the file changed: keep unchanged runs server-side.
    if limits.upload_part_copy && size > MIN_PART {
        let parts = copy_parts(snap, limits);
        if parts.iter().any(|p| matches!(p, Part::Copy(_))) {
            return Plan::Multipart(parts);
        }
    }
    // 6. Read the base, upload everything.
    if size <= limits.put_max {
        Plan::Put
    } else {
        Plan::Multipart(upload_parts(0..size, limits.part_size, true))
    }
}

/// Whether `ranges` (ascending, disjoint) cover all of `want`.
pub fn covers(ranges: &[Range<u64>], want: Range<u64>) -> bool {
    let mut at = want.start;
    for r in ranges {
        if r.start > at {
            break;
        }
        at = at.max(r.end);
        if at >= want.end {
            break;
        }
    }
    at >= want.end
}

/// Splits `range` into upload parts of about `part_size` (subtle case 2):
/// near-equal parts, none over [`MAX_PART`], at least [`MIN_PART`] unless
/// the range itself is shorter, and few enough for [`MAX_PARTS`] when
/// `whole` (the range is the whole upload).
fn upload_parts(range: Range<u64>, part_size: u64, whole: bool) -> Vec<Part> {
    split(range, part_size, whole)
        .into_iter()
        .map(Part::Upload)
        .collect()
}

/// Near-equal pieces of `range`, each about `target` (at least
/// [`MIN_PART`], at most [`MAX_PART`]), fewer than [`MAX_PARTS`] when
/// `whole`.
fn split(range: Range<u64>, target: u64, whole: bool) -> Vec<Range<u64>> {
    let len = range.end - range.start;
    if len == 0 {
        return vec![range];
    }
    let mut target = target.clamp(MIN_PART, MAX_PART);
    if whole {
        target = target.max(len.div_ceil(MAX_PARTS));
    }
    // As many pieces as `target` asks for, but never one under MIN_PART
    // (9 MiB in 8 MiB parts is one part, not two of 4.5 MiB).
    let count = len.div_ceil(target).min(len / MIN_PART).max(1);
    // Even split: every piece within one byte of the others.
    let base = len / count;
    let extra = len % count;
    let mut out = Vec::with_capacity(count as usize);
    let mut at = range.start;
    for i in 0..count {
        let piece = base + u64::from(i < extra);
        out.push(at..at + piece);
        at += piece;
    }
    out
}

/// Choice 5: copy runs of unchanged bytes, upload the rest (subtle case 1).
fn copy_parts(snap: &Snapshot, limits: &PlanLimits) -> Vec<Part> {
    let copy_min = limits.copy_min.max(MIN_PART);
    let base_valid = snap.base_valid.min(snap.size);
    // Runs over 0..size: (range, unchanged).
    let mut runs: Vec<(Range<u64>, bool)> = Vec::new();
    let mut push = |r: Range<u64>, unchanged: bool| {
        if r.is_empty() {
            return;
        }
        match runs.last_mut() {
            Some((last, u)) if *u == unchanged && last.end == r.start => last.end = r.end,
            _ => runs.push((r, unchanged)),
        }
    };
    let mut at = 0;
    for d in &snap.dirty {
        // Unchanged below `base_valid`; changed from there (holes are
        // dirty, so that part is normally empty).
        push(at..d.start.min(base_valid).max(at), true);
        push(at.max(d.start.min(base_valid))..d.start, false);
        push(d.clone(), false);
        at = d.end;
    }
    push(at..base_valid.max(at), true);
    push(base_valid.max(at)..snap.size, false);

    // Short unchanged runs are uploaded with their neighbours.
    let mut merged: Vec<(Range<u64>, bool)> = Vec::new();
    for (r, unchanged) in runs {
        let copy = unchanged && r.end - r.start >= copy_min;
        match merged.last_mut() {
            Some((last, c)) if !*c && !copy => last.end = r.end,
            _ => merged.push((r, copy)),
        }
    }

    // Upload runs shorter than a part borrow from the copy run after them.
    let mut i = 0;
    while i + 1 < merged.len() {
        let (up, is_copy) = merged[i].clone();
        let len = up.end - up.start;
        if !is_copy && len < MIN_PART {
            let need = MIN_PART - len;
            let next = merged[i + 1].0.clone();
            if next.end - next.start >= need + MIN_PART {
                merged[i].0.end += need;
                merged[i + 1].0.start += need;
            } else {
                // Too short to leave a part behind: upload it all, then
                // look at the same (longer) run again.
                merged[i].0.end = next.end;
                merged.remove(i + 1);
                if let Some((after, false)) = merged.get(i + 1).cloned() {
                    merged[i].0.end = after.end;
                    merged.remove(i + 1);
                }
                continue;
            }
        }
        i += 1;
    }

    let mut parts = Vec::new();
    let last = merged.len().saturating_sub(1);
    for (i, (r, copy)) in merged.into_iter().enumerate() {
        if copy {
            parts.extend(split(r, MAX_PART, false).into_iter().map(Part::Copy));
        } else {
            // Only the last run may end in a short part.
            let pieces = split(r, limits.part_size, false);
            debug_assert!(i == last || pieces.iter().all(|p| p.end - p.start >= MIN_PART));
            parts.extend(pieces.into_iter().map(Part::Upload));
        }
    }
    if parts.len() as u64 > MAX_PARTS {
        // Rare: too many runs. Upload everything in big parts instead.
        return upload_parts(0..snap.size, limits.part_size, true);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> PlanLimits {
        PlanLimits {
            append: false,
            modify_at_offset: false,
            upload_part_copy: true,
            part_size: 8 * MIB,
            put_max: 8 * MIB,
            append_create_max: 8 * MIB,
            copy_min: 8 * MIB,
        }
    }

    fn base(size: u64, appendable: bool) -> Option<BaseObject> {
        Some(BaseObject {
            etag: "e".into(),
            size,
            appendable,
        })
    }

    fn snap(
        size: u64,
        base: Option<BaseObject>,
        base_valid: u64,
        dirty: &[Range<u64>],
    ) -> Snapshot {
        Snapshot {
            size,
            base,
            base_valid,
            dirty: dirty.to_vec(),
            meta_changed: false,
        }
    }

    /// Checks the multipart rules and that the parts tile 0..size.
    fn check_parts(parts: &[Part], size: u64) {
        assert!(!parts.is_empty() && parts.len() as u64 <= MAX_PARTS);
        let mut at = 0;
        for (i, p) in parts.iter().enumerate() {
            let r = p.range();
            assert_eq!(r.start, at, "parts must tile: {parts:?}");
            assert!(r.end > r.start);
            assert!(r.end - r.start <= MAX_PART);
            if i + 1 < parts.len() {
                assert!(r.end - r.start >= MIN_PART, "short part {i}: {parts:?}");
            }
            at = r.end;
        }
        assert_eq!(at, size);
    }

    #[test]
    fn new_files_are_put_or_multipart() {
        let l = limits();
        assert_eq!(plan(&snap(0, None, 0, &[]), &l), Plan::Put);
        assert_eq!(plan(&snap(100, None, 0, &[0..100]), &l), Plan::Put);
        let Plan::Multipart(parts) = plan(&snap(20 * MIB, None, 0, &[0..20 * MIB]), &l) else {
            panic!()
        };
        check_parts(&parts, 20 * MIB);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| matches!(p, Part::Upload(_))));
    }

    #[test]
    fn new_small_files_are_appendable_where_the_dialect_appends() {
        let l = PlanLimits {
            append: true,
            ..limits()
        };
        assert_eq!(
            plan(&snap(100, None, 0, &[0..100]), &l),
            Plan::Append(0..100)
        );
        assert_eq!(plan(&snap(0, None, 0, &[]), &l), Plan::Append(0..0));
        // An overwrite of an existing object cannot append at 0.
        assert_eq!(
            plan(&snap(100, base(50, true), 0, &[0..100]), &l),
            Plan::Put
        );
    }

    #[test]
    fn appends_to_appendable_objects_send_only_new_bytes() {
        let l = PlanLimits {
            append: true,
            ..limits()
        };
        let s = snap(
            1 << 40,
            base((1 << 40) - 4096, true),
            (1 << 40) - 4096,
            &[(1 << 40) - 4096..1 << 40],
        );
        assert_eq!(plan(&s, &l), Plan::Append((1 << 40) - 4096..1 << 40));
        // Not appendable: a large object keeps its bytes with a copy part.
        let s = snap(
            100 * MIB + 4096,
            base(100 * MIB, false),
            100 * MIB,
            &[100 * MIB..100 * MIB + 4096],
        );
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, 100 * MIB + 4096);
        assert_eq!(
            parts,
            vec![
                Part::Copy(0..100 * MIB),
                Part::Upload(100 * MIB..100 * MIB + 4096)
            ]
        );
    }

    #[test]
    fn small_objects_with_changes_are_rewritten() {
        let l = limits();
        assert_eq!(
            plan(&snap(MIB, base(MIB, false), MIB, &[10..20]), &l),
            Plan::Put
        );
        // Too small for a copy part of its own: upload it all.
        assert_eq!(
            plan(&snap(6 * MIB, base(6 * MIB, false), 6 * MIB, &[10..20]), &l),
            Plan::Put
        );
    }

    #[test]
    fn a_write_in_the_middle_copies_both_sides() {
        let l = limits();
        let size = 1024 * MIB;
        let s = snap(size, base(size, false), size, &[500 * MIB..500 * MIB + 10]);
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, size);
        let uploaded: u64 = parts
            .iter()
            .filter(|p| matches!(p, Part::Upload(_)))
            .map(|p| p.range().end - p.range().start)
            .sum();
        assert_eq!(uploaded, MIN_PART, "{parts:?}");
        assert!(matches!(parts[0], Part::Copy(_)));
        assert!(matches!(parts.last(), Some(Part::Copy(_))));
    }

    #[test]
    fn a_write_near_the_start_swallows_a_short_copy_run() {
        let l = limits();
        let size = 100 * MIB;
        // Dirty at 2 MiB: the 2 MiB before it is too short to copy.
        let s = snap(size, base(size, false), size, &[2 * MIB..2 * MIB + 1]);
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, size);
        assert_eq!(parts[0], Part::Upload(0..MIN_PART));
        assert_eq!(parts[1], Part::Copy(MIN_PART..size));
        // Dirty 3 MiB before the end: the tail is uploaded with it.
        let s = snap(
            size,
            base(size, false),
            size,
            &[size - 3 * MIB..size - 3 * MIB + 1],
        );
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, size);
        assert_eq!(parts.last(), Some(&Part::Upload(size - 3 * MIB..size)));
    }

    #[test]
    fn many_scattered_writes_stay_within_the_part_rules() {
        let l = limits();
        let size = 3000 * MIB + 123;
        let dirty: Vec<Range<u64>> = (0..200)
            .map(|i| {
                let at = i * 15 * MIB + (i * 7919) % MIB;
                at..at + 100 + i
            })
            .collect();
        let s = snap(size, base(size, false), size, &dirty);
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, size);
        // Every dirty byte lies in an upload part.
        for d in &dirty {
            assert!(
                parts
                    .iter()
                    .any(|p| matches!(p, Part::Upload(r) if r.start <= d.start && d.end <= r.end))
            );
        }
    }

    #[test]
    fn truncate_then_extend_uploads_the_zeros() {
        let l = limits();
        let size = 100 * MIB;
        // Cut to 40 MiB, then extended back: 40 MiB.. are dirty zeros.
        let s = snap(size, base(size, false), 40 * MIB, &[40 * MIB..size]);
        let Plan::Multipart(parts) = plan(&s, &l) else {
            panic!()
        };
        check_parts(&parts, size);
        assert_eq!(parts[0], Part::Copy(0..40 * MIB));
        // A plain cut of a large object copies the head.
        let s = snap(40 * MIB, base(size, false), 40 * MIB, &[]);
        assert_eq!(plan(&s, &l), Plan::Multipart(vec![Part::Copy(0..40 * MIB)]));
    }

    #[test]
    fn metadata_only_and_nothing() {
        let l = limits();
        let mut s = snap(10, base(10, false), 10, &[]);
        assert_eq!(plan(&s, &l), Plan::Nothing);
        s.meta_changed = true;
        assert_eq!(plan(&s, &l), Plan::Metadata);
    }

    #[test]
    fn pfs_buckets_modify_in_place() {
        let l = PlanLimits {
            modify_at_offset: true,
            ..limits()
        };
        let s = snap(100, base(200, false), 50, &[10..20, 50..100]);
        assert_eq!(
            plan(&s, &l),
            Plan::Modify {
                truncate: Some(50),
                writes: vec![10..20, 50..100]
            }
        );
        // A whole rewrite is an ordinary put.
        assert_eq!(
            plan(&snap(10, base(200, false), 0, &[0..10]), &l),
            Plan::Put
        );
    }

    #[test]
    fn five_tebibytes_fit_in_ten_thousand_parts() {
        let size = 5u64 << 40;
        let Plan::Multipart(parts) = plan(&snap(size, None, 0, &[0..size]), &limits()) else {
            panic!()
        };
        check_parts(&parts, size);
        assert!(parts.len() as u64 <= MAX_PARTS);
    }

    #[test]
    fn covers_checks_gaps() {
        assert!(covers(&[0..5, 5..10], 0..10));
        assert!(!covers(&[0..5, 6..10], 0..10));
        assert!(covers(&[], 0..0));
        assert!(!covers(&[1..10], 0..10));
    }
}
