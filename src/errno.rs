//! The one place where object-store errors become errno values.
//!
//! The filesystem replies to the kernel with these. The match is exhaustive,
//! so a new error variant cannot reach a user without a decision here.

use crate::store::StoreError;

/// The errno a filesystem call should fail with for `err`.
pub fn errno(err: &StoreError) -> i32 {
    match err {
        StoreError::NoSuchKey { .. } => libc::ENOENT,
        // The whole mount is gone, not one file: still ENOENT is what `ls`
        // users understand; the log says which bucket.
        StoreError::NoSuchBucket { .. } => libc::ENOENT,
        StoreError::AccessDenied(_) => libc::EACCES,
        // Bad or expired credentials deny everything; EACCES rather than EIO
        // so tools print "Permission denied" instead of an I/O error.
        StoreError::BadCredentials(_) => libc::EACCES,
        // The caller's view of the file length was stale: the write must be
        // re-planned, which the write path does; if it reaches a user, the
        // file changed under them.
        StoreError::PositionNotEqualToLength { .. } => libc::EIO,
        StoreError::ObjectNotAppendable { .. } => libc::EIO,
        // Pinned reads: the object changed since open.
        StoreError::PreconditionFailed(_) => libc::ESTALE,
        StoreError::InvalidRange(_) => libc::EINVAL,
        StoreError::NoSuchUpload { .. } => libc::EIO,
        StoreError::AlreadyExists { .. } => libc::EEXIST,
        StoreError::Unsupported(_) => libc::ENOTSUP,
        StoreError::Timeout(_) => libc::ETIMEDOUT,
        StoreError::Transport(_) => libc::EIO,
        StoreError::Service(d) if d.status == 507 => libc::ENOSPC,
        StoreError::Service(d) if d.code == "EntityTooLarge" => libc::EFBIG,
        StoreError::Service(d)
            if matches!(
                d.code.as_str(),
                "KeyTooLong" | "KeyTooLongError" | "InvalidObjectName"
            ) =>
        {
            libc::ENAMETOOLONG
        }
        StoreError::Service(_) => libc::EIO,
        StoreError::InvalidResponse(_) | StoreError::IncompleteBody(_) => libc::EIO,
        StoreError::InvalidRequest(_) => libc::EINVAL,
        StoreError::Integrity(_) => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ServiceDetails;

    #[test]
    fn common_errors_map_to_the_errno_users_expect() {
        assert_eq!(
            errno(&StoreError::NoSuchKey { key: "k".into() }),
            libc::ENOENT
        );
        assert_eq!(
            errno(&StoreError::AccessDenied(ServiceDetails::default())),
            libc::EACCES
        );
        assert_eq!(
            errno(&StoreError::AlreadyExists { key: "k".into() }),
            libc::EEXIST
        );
        assert_eq!(errno(&StoreError::Unsupported("x")), libc::ENOTSUP);
        assert_eq!(
            errno(&StoreError::PreconditionFailed(ServiceDetails::default())),
            libc::ESTALE
        );
        assert_eq!(errno(&StoreError::Timeout("t".into())), libc::ETIMEDOUT);
        let too_long = ServiceDetails {
            status: 400,
            code: "KeyTooLong".into(),
            ..Default::default()
        };
        assert_eq!(errno(&StoreError::Service(too_long)), libc::ENAMETOOLONG);
        let internal = ServiceDetails {
            status: 500,
            code: "InternalError".into(),
            ..Default::default()
        };
        assert_eq!(errno(&StoreError::Service(internal)), libc::EIO);
    }
}
