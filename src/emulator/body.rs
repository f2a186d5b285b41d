//! The body of an emulator response: the whole payload, or (fault
//! `truncate`) a payload that promises its full length in `Content-Length`,
//! sends the first half and then fails, so hyper closes the connection
//! mid-body as a broken server or proxy would.

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A response body sent in one frame, possibly cut short.
pub struct ResponseBody {
    /// What is still to be sent.
    data: Option<Bytes>,
    /// The length announced in `Content-Length`.
    promised: u64,
    /// Whether the body ends with an error after `data`.
    cut_short: bool,
}

impl ResponseBody {
    /// The whole payload.
    pub fn whole(data: Bytes) -> Self {
        Self {
            promised: data.len() as u64,
            data: Some(data).filter(|d| !d.is_empty()),
            cut_short: false,
        }
    }

    /// `data`'s length announced, its first half sent, then the connection
    /// broken.
    pub fn cut_in_half(data: Bytes) -> Self {
        Self {
            promised: data.len() as u64,
            data: Some(data.slice(..data.len() / 2)),
            cut_short: true,
        }
    }
}

/// Why a cut-short body ends.
#[derive(Debug)]
pub struct CutShort;

impl std::fmt::Display for CutShort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body cut short by fault rule")
    }
}

impl std::error::Error for CutShort {}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = CutShort;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CutShort>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.cut_short) {
            return Poll::Ready(Some(Err(CutShort)));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.cut_short
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.promised)
    }
}
