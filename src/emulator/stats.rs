//! Per-operation request and byte counters, served as JSON at `GET /-/stats`.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;

/// Counters of one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counter {
    pub requests: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

/// Counters keyed by operation name (`GetObject`, `ListObjectsV2`, ...).
#[derive(Debug, Default)]
pub struct Stats {
    counters: Mutex<BTreeMap<&'static str, Counter>>,
}

impl Stats {
    pub fn record(&self, operation: &'static str, bytes_in: u64, bytes_out: u64) {
        let mut counters = self.counters.lock();
        let c = counters.entry(operation).or_default();
        c.requests += 1;
        c.bytes_in += bytes_in;
        c.bytes_out += bytes_out;
    }

    pub fn reset(&self) {
        self.counters.lock().clear();
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, Counter> {
        self.counters.lock().clone()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.snapshot()).unwrap_or_else(|_| "{}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_and_reset() {
        let s = Stats::default();
        s.record("GetObject", 0, 100);
        s.record("GetObject", 0, 50);
        s.record("PutObject", 7, 0);
        let snap = s.snapshot();
        assert_eq!(
            snap["GetObject"],
            Counter {
                requests: 2,
                bytes_in: 0,
                bytes_out: 150
            }
        );
        assert!(s.to_json().contains("\"PutObject\""));
        s.reset();
        assert!(s.snapshot().is_empty());
    }
}
