//! Streaming multipart uploads: a file written front to back uploads its
//! parts while it is still being written, so closing a large file only
//! waits for its last part, and the staging disk is read while the data is
//! still in the page cache.
//!
//! A [`Stream`] belongs to one dirty file. Writes hand it the parts that
//! have filled ([`Stream::next_part`]); part tasks upload them; the upload
//! at close either finishes the stream (uploads the tail, completes) or,
//! if the file stopped being written front to back, aborts it and uploads
//! the ordinary way.
//!
//! Subtle cases:
//! 1. **Only new, sequentially written content.** A file streams while it
//!    has no base bytes in use (new, or truncated to zero) and its dirty
//!    bytes are exactly `0..size`. A write below the streamed offset, or a
//!    truncation, breaks the stream: the parts already sent may no longer
//!    match the file.
//! 2. **Growing parts.** Part n is `part_size` doubled every 1,000 parts
//!    (capped at 5 GiB), so 10,000 parts hold more than 5 TiB.
//! 3. **One multipart upload, created once.** The first part task creates
//!    it; the others wait for its ID.
//! 4. **Bounded.** At most [`MAX_PARTS_IN_FLIGHT`] parts of one file are
//!    being uploaded at once (and the uploader's mount-wide bound applies);
//!    parts that fill meanwhile wait for the next write or for the close.

use crate::fs::write::plan::{MAX_PART, MAX_PARTS};
use crate::staging::journal::FileMeta;
use crate::store::CompletedPart;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::{OnceCell, watch};

/// Parts of one file uploading at once (subtle case 4): the default
/// `upload_concurrency`, so one large file can use the whole pipeline.
pub const MAX_PARTS_IN_FLIGHT: usize = 8;

/// The size of part `number` (1-based) for a preferred `part_size`.
pub fn part_len(part_size: u64, number: u32) -> u64 {
    let doublings = (u64::from(number.saturating_sub(1)) / 1000).min(20);
    (part_size << doublings).min(MAX_PART)
}

/// One part to upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamPart {
    pub number: u32,
    pub range: Range<u64>,
}

/// The state of a streaming upload.
#[derive(Debug)]
pub struct Stream {
    pub key: String,
    /// The metadata the multipart upload was created with.
    pub meta: FileMeta,
    /// The multipart upload, created by the first part (subtle case 3).
    pub upload_id: Arc<OnceCell<String>>,
    /// Parts uploaded, by number.
    pub done: BTreeMap<u32, CompletedPart>,
    /// Offset up to which parts were handed out.
    pub next_offset: u64,
    pub next_number: u32,
    /// Parts being uploaded; watched by the close that finishes the stream.
    pub in_flight: watch::Sender<usize>,
    /// The stream cannot be completed (subtle case 1, or a part failed).
    pub broken: bool,
}

impl Stream {
    pub fn new(key: String, meta: FileMeta) -> Stream {
        Stream {
            key,
            meta,
            upload_id: Arc::new(OnceCell::new()),
            done: BTreeMap::new(),
            next_offset: 0,
            next_number: 1,
            in_flight: watch::Sender::new(0),
            broken: false,
        }
    }

    /// The next part, if `size` bytes are written and a part's worth is
    /// ready past what was handed out.
    pub fn next_part(&mut self, size: u64, part_size: u64) -> Option<StreamPart> {
        if self.broken || *self.in_flight.borrow() >= MAX_PARTS_IN_FLIGHT {
            return None;
        }
        let len = part_len(part_size, self.next_number);
        // Keep the last part for the close: the file may end anywhere.
        if self.next_offset + len > size || u64::from(self.next_number) >= MAX_PARTS {
            return None;
        }
        let part = StreamPart {
            number: self.next_number,
            range: self.next_offset..self.next_offset + len,
        };
        self.next_offset += len;
        self.next_number += 1;
        self.in_flight.send_modify(|n| *n += 1);
        Some(part)
    }

    /// The parts that finish a file of `size` bytes, after the streamed
    /// ones: part-sized pieces, the last one possibly short.
    pub fn tail(&self, size: u64, part_size: u64) -> Vec<StreamPart> {
        let mut parts = Vec::new();
        let (mut at, mut number) = (self.next_offset, self.next_number);
        while at < size || (at == 0 && parts.is_empty()) {
            let len = if u64::from(number) >= MAX_PARTS {
                size - at
            } else {
                part_len(part_size, number).min(size - at)
            };
            parts.push(StreamPart {
                number,
                range: at..at + len,
            });
            at += len;
            number += 1;
            if len == 0 {
                break;
            }
        }
        parts
    }

    /// A part task ended.
    pub fn part_ended(&mut self, result: Result<CompletedPart, ()>) {
        match result {
            Ok(part) => {
                self.done.insert(part.part_number, part);
            }
            Err(()) => self.broken = true,
        }
        self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn parts_fill_in_order_and_leave_the_tail() {
        let mut s = Stream::new("k".into(), FileMeta::default());
        assert_eq!(s.next_part(7 * MIB, 8 * MIB), None);
        let p1 = s.next_part(17 * MIB, 8 * MIB).unwrap();
        let p2 = s.next_part(17 * MIB, 8 * MIB).unwrap();
        assert_eq!((p1.number, p1.range), (1, 0..8 * MIB));
        assert_eq!((p2.number, p2.range), (2, 8 * MIB..16 * MIB));
        assert_eq!(s.next_part(17 * MIB, 8 * MIB), None);
        assert_eq!(
            s.tail(17 * MIB, 8 * MIB),
            vec![StreamPart {
                number: 3,
                range: 16 * MIB..17 * MIB
            }]
        );
        s.part_ended(Ok(CompletedPart {
            part_number: 1,
            etag: "a".into(),
        }));
        s.part_ended(Err(()));
        assert!(s.broken);
        assert_eq!(*s.in_flight.borrow(), 0);
    }

    #[test]
    fn in_flight_parts_are_bounded() {
        let mut s = Stream::new("k".into(), FileMeta::default());
        let n = (0..10)
            .filter_map(|_| s.next_part(1 << 40, 8 * MIB))
            .count();
        assert_eq!(n, MAX_PARTS_IN_FLIGHT);
    }

    #[test]
    fn five_tebibytes_fit() {
        let mut total = 0;
        for n in 1..=MAX_PARTS as u32 {
            total += part_len(8 * MIB, n);
        }
        assert!(total >= 5 << 40, "{total}");
    }
}
