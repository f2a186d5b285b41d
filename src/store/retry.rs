//! Which failures are worth another attempt, and how long to wait first.
//!
//! 1. Retried: 5xx, 429, the throttling/transient codes servers send with
//!    other statuses (`SlowDown`, `RequestTimeout`, ...), timeouts, connection
//!    failures and bodies cut short.
//! 2. Never retried: anything that says the request itself is wrong (4xx such
//!    as NoSuchKey, AccessDenied, PositionNotEqualToLength).
//! 3. Waits use "full jitter" exponential backoff: a uniform random delay in
//!    `[0, min(cap, base * 2^attempt)]`, so that many clients throttled at
//!    once do not come back in lockstep.
//! 4. Whether a retryable failure may simply be re-sent is a separate
//!    question, answered by [`super::Operation::is_idempotent`]: appends and
//!    multipart completions check the server's state first.

use super::error::StoreError;
use std::time::Duration;

/// Codes that mean "try again later" whatever the status says.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
];

/// How often and how patiently a request is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff ceiling for the first retry; doubles for each further one.
    pub base_delay: Duration,
    /// Largest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six attempts spread over up to ~20 s: long enough to ride out a
    /// throttling burst or a load-balancer failover, short enough that a
    /// dead endpoint is reported to the caller in well under a minute.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (for probes that should fail fast).
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Whether attempt number `attempt` (1-based) may be followed by another.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }

    /// The wait before retry number `retry` (1-based), given a uniform random
    /// `unit` in `[0, 1)`.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = self.base_delay.saturating_mul(
            1u32.checked_shl(retry.saturating_sub(1))
                .unwrap_or(u32::MAX),
        );
        let ceiling = exp.min(self.max_delay);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Whether `err` is a transient failure that another attempt may cure.
pub fn is_retryable(err: &StoreError) -> bool {
    match err {
        StoreError::Service(d) => {
            d.status >= 500 || d.status == 429 || TRANSIENT_CODES.contains(&d.code.as_str())
        }
        StoreError::Timeout(_) | StoreError::Transport(_) | StoreError::IncompleteBody(_) => true,
        StoreError::NoSuchKey { .. }
        | StoreError::NoSuchBucket { .. }
        | StoreError::AccessDenied(_)
        | StoreError::BadCredentials(_)
        | StoreError::PositionNotEqualToLength { .. }
        | StoreError::ObjectNotAppendable { .. }
        | StoreError::PreconditionFailed(_)
        | StoreError::InvalidRange(_)
        | StoreError::NoSuchUpload { .. }
        | StoreError::AlreadyExists { .. }
        | StoreError::Unsupported(_)
        | StoreError::InvalidResponse(_)
        | StoreError::InvalidRequest(_)
        | StoreError::Integrity(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::error::ServiceDetails;

    fn service(status: u16, code: &str) -> StoreError {
        StoreError::Service(ServiceDetails {
            status,
            code: code.into(),
            ..Default::default()
        })
    }

    #[test]
    fn transient_failures_are_retried_and_client_errors_are_not() {
        assert!(is_retryable(&service(500, "InternalError")));
        assert!(is_retryable(&service(503, "SlowDown")));
        assert!(is_retryable(&service(503, "")));
        assert!(is_retryable(&service(429, "")));
        assert!(is_retryable(&service(400, "RequestTimeout")));
        assert!(is_retryable(&StoreError::Timeout("read".into())));
        assert!(is_retryable(&StoreError::Transport(
            "connection reset".into()
        )));
        assert!(is_retryable(&StoreError::IncompleteBody(
            "3 of 10 bytes".into()
        )));

        assert!(!is_retryable(&service(400, "InvalidArgument")));
        assert!(!is_retryable(&StoreError::NoSuchKey { key: "k".into() }));
        assert!(!is_retryable(&StoreError::AccessDenied(
            ServiceDetails::default()
        )));
        assert!(!is_retryable(&StoreError::PositionNotEqualToLength {
            position: 1,
            next_position: Some(2)
        }));
        assert!(!is_retryable(&StoreError::Integrity("crc".into())));
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(5, 1.0), Duration::from_secs(1), "capped");
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(1), "no overflow");
        assert_eq!(p.delay(3, 0.5), Duration::from_millis(200), "jitter scales");
        assert_eq!(p.delay(3, 0.0), Duration::ZERO);
    }

    #[test]
    fn attempts_are_bounded() {
        let p = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        assert!(p.allows_another(1) && p.allows_another(2));
        assert!(!p.allows_another(3));
        assert!(!RetryPolicy::none().allows_another(1));
    }
}
