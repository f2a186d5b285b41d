//! Errors of the object-store layer.
//!
//! Vendor error codes that callers act on get their own variant (a missing
//! key, a wrong append position, a missing upload); everything else keeps the
//! server's code, message and request ID in [`StoreError::Service`] so that an
//! operator can quote the request ID to the vendor. Mapping to errno lives in
//! [`crate::errno`].

use std::fmt;

/// What the server said about a failed request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceDetails {
    pub status: u16,
    /// Vendor error code (`NoSuchKey`, `SlowDown`, ...); empty when the
    /// response had no XML body (HEAD).
    pub code: String,
    pub message: String,
    pub request_id: String,
}

impl fmt::Display for ServiceDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if !self.request_id.is_empty() {
            write!(f, " (request id {})", self.request_id)?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("no such key {key:?}")]
    NoSuchKey { key: String },
    #[error("no such bucket {bucket:?}")]
    NoSuchBucket { bucket: String },
    #[error("access denied: {0}")]
    AccessDenied(ServiceDetails),
    #[error("credentials rejected: {0}")]
    BadCredentials(ServiceDetails),
    #[error(
        "append position {position} is not the object's length (next position {next_position:?})"
    )]
    PositionNotEqualToLength {
        position: u64,
        next_position: Option<u64>,
    },
    #[error("object {key:?} is not appendable")]
    ObjectNotAppendable { key: String },
    #[error("precondition failed (object changed): {0}")]
    PreconditionFailed(ServiceDetails),
    #[error("range not satisfiable: {0}")]
    InvalidRange(ServiceDetails),
    #[error("no such multipart upload {upload_id:?}")]
    NoSuchUpload { upload_id: String },
    #[error("target {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("not supported by this backend: {0}")]
    Unsupported(&'static str),
    #[error("server error: {0}")]
    Service(ServiceDetails),
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("network error: {0}")]
    Transport(String),
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The body ended before Content-Length: a transient fault worth a retry.
    #[error("incomplete response body: {0}")]
    IncompleteBody(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

impl StoreError {
    /// The request ID the server returned with this error, if any.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            StoreError::AccessDenied(d)
            | StoreError::BadCredentials(d)
            | StoreError::PreconditionFailed(d)
            | StoreError::InvalidRange(d)
            | StoreError::Service(d) => Some(d.request_id.as_str()).filter(|s| !s.is_empty()),
            _ => None,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `Ok` when the backend has the capability, else [`StoreError::Unsupported`]
/// naming `what`: both stores refuse a missing operation before doing anything.
pub fn require(available: bool, what: &'static str) -> StoreResult<()> {
    if available {
        Ok(())
    } else {
        Err(StoreError::Unsupported(what))
    }
}
