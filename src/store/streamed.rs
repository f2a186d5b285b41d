//! The request body of a streamed upload part ([`StreamedPartRequest`]):
//! the bytes of a [`PartSource`] read [`STREAM_CHUNK`] at a time while
//! hyper sends them, so a part of any size costs a chunk or two of memory.
//!
//! Subtle cases:
//! 1. **Digests first.** `Content-MD5` (and SigV4's payload hash) go in
//!    the headers, before the body: a digest pass over the source runs
//!    first ([`digest_source`]), then the body pass sends it.
//! 2. **A source that changes in between.** A staged file may be written
//!    while its part uploads (dirty.rs, subtle case 1). The body pass
//!    digests what it sends again; if it differs from the first pass the
//!    body ends with an error, the attempt fails as a transport error, and
//!    the retry digests the source anew. Bytes that do not match their
//!    `Content-MD5` are never offered as complete.
//! 3. **Blocking reads.** Chunks are read with `pread` inside `poll_frame`:
//!    a staged file's recent bytes are in the page cache, so a 1 MiB read
//!    costs a fraction of a millisecond of the runtime thread.

use super::types::{PartSource, STREAM_CHUNK};
use base64::Engine;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use md5::Digest;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// `range` of `source` as an HTTP body whose MD5 must be `expected_md5`
/// (base64), subtle case 2.
pub struct SourceBody {
    source: Arc<dyn PartSource>,
    at: u64,
    end: u64,
    md5: md5::Md5,
    expected_md5: String,
}

impl SourceBody {
    pub fn new(source: Arc<dyn PartSource>, range: Range<u64>, expected_md5: String) -> Self {
        SourceBody {
            source,
            at: range.start,
            end: range.end,
            md5: md5::Md5::new(),
            expected_md5,
        }
    }
}

impl Body for SourceBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if this.at >= this.end {
            return Poll::Ready(None);
        }
        let n = (this.end - this.at).min(STREAM_CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        if let Err(e) = this.source.read_at(&mut buf, this.at) {
            this.at = this.end;
            return Poll::Ready(Some(Err(e)));
        }
        this.md5.update(&buf);
        this.at += n as u64;
        if this.at == this.end {
            let sent = base64::engine::general_purpose::STANDARD
                .encode(std::mem::take(&mut this.md5).finalize());
            if sent != this.expected_md5 {
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "the part's data changed while it was sent (it is sent again)",
                ))));
            }
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.end - self.at)
    }
}
