//! Requests and failures per operation, counted by the HTTP store for
//! `bucketfs stats`: every HTTP request, retries included, and every
//! failed one, with the last error's text, which carries the server's
//! request ID when it sent one.

use super::types::Operation;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The counts of one operation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests sent (retries included).
    pub requests: u64,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Counts per operation name.
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<&'static str, RequestCount>>,
}

impl RequestCounters {
    /// Counts one operation and, if it failed, its error.
    pub fn record(&self, op: Operation, error: Option<&dyn std::fmt::Display>) {
        let mut counts = self.counts.lock();
        let c = counts.entry(op.name()).or_default();
        c.requests += 1;
        if let Some(e) = error {
            c.errors += 1;
            c.last_error = Some(e.to_string());
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, RequestCount> {
        self.counts
            .lock()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_and_keeps_the_last_error() {
        let c = RequestCounters::default();
        c.record(Operation::GetObject, None);
        c.record(Operation::GetObject, Some(&"boom (request id 1)"));
        let snap = c.snapshot();
        assert_eq!(
            snap["GetObject"],
            RequestCount {
                requests: 2,
                errors: 1,
                last_error: Some("boom (request id 1)".into())
            }
        );
    }
}
