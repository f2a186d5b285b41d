//! Fault injection: rules that make chosen requests fail the way real
//! servers and networks fail, set at start (`--fault`) or at run time
//! (`POST /-/faults`), reproducible with a seed.
//!
//! A rule is one line `OPERATION:KIND[:next=N][:p=FRACTION]`:
//! * `OPERATION` is a counter name (`GetObject`, `PutObject`, ...) or `*`;
//! * `KIND` is `500` (InternalError), `503` (SlowDown), `reset` (close the
//!   connection without answering), `delay=MS` (handle late),
//!   `late=MS` (handle at once, answer late), or `truncate`
//!   (send half the body, then close);
//! * `next=N` applies it to the next N matching requests only; `p=F` to a
//!   fraction F of them, drawn from the seeded generator; both may be given
//!   (a fraction of the next N); neither means every matching request.
//!
//! Subtle cases:
//! 1. Rules are tried in the order given; the first that fires wins, and a
//!    rule whose `next` count is spent is dropped.
//! 2. The random draw happens only for rules with `p=`, so adding a `next=`
//!    rule does not shift the sequence a seeded run sees.

use parking_lot::Mutex;
use std::time::Duration;

/// What happens to a request a rule fires on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind {
    /// 500 InternalError.
    Internal,
    /// 503 SlowDown.
    SlowDown,
    /// 403 AccessDenied (a bucket policy refusing the caller).
    Denied,
    /// The connection is closed without a response.
    Reset,
    /// The request is handled after this long (a client that gives up
    /// first leaves nothing done).
    Delay(Duration),
    /// The request is handled at once, answered after this long (a client
    /// that gives up first finds the change made nonetheless).
    Late(Duration),
    /// Half of the response body is sent, then the connection is closed.
    Truncate,
}

/// One fault rule.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultRule {
    /// Operation name, or `None` for every operation.
    pub operation: Option<String>,
    pub kind: FaultKind,
    /// How many more matching requests the rule may hit; `None` = no limit.
    pub remaining: Option<u64>,
    /// Fraction of matching requests hit; `None` = all.
    pub fraction: Option<f64>,
}

impl FaultRule {
    /// Parses `OPERATION:KIND[:next=N][:p=FRACTION]`.
    pub fn parse(s: &str) -> Result<FaultRule, String> {
        let mut fields = s.trim().split(':');
        let operation = match fields.next() {
            Some("*") => None,
            Some(op) if !op.is_empty() => Some(op.to_string()),
            _ => return Err(format!("fault rule {s:?}: no operation")),
        };
        let kind = match fields.next() {
            Some("500") => FaultKind::Internal,
            Some("503") => FaultKind::SlowDown,
            Some("403") => FaultKind::Denied,
            Some("reset") => FaultKind::Reset,
            Some("truncate") => FaultKind::Truncate,
            Some(d) if d.starts_with("delay=") || d.starts_with("late=") => {
                let (name, ms) = d.split_once('=').unwrap_or_default();
                let ms: u64 = ms
                    .trim_end_matches("ms")
                    .parse()
                    .map_err(|_| format!("fault rule {s:?}: {name} needs milliseconds"))?;
                let d = Duration::from_millis(ms);
                if name == "delay" {
                    FaultKind::Delay(d)
                } else {
                    FaultKind::Late(d)
                }
            }
            other => {
                return Err(format!(
                    "fault rule {s:?}: unknown kind {other:?} (500, 503, 403, reset, delay=MS, late=MS, truncate)"
                ));
            }
        };
        let mut rule = FaultRule {
            operation,
            kind,
            remaining: None,
            fraction: None,
        };
        for field in fields {
            if let Some(n) = field.strip_prefix("next=") {
                rule.remaining = Some(
                    n.parse()
                        .map_err(|_| format!("fault rule {s:?}: bad next={n}"))?,
                );
            } else if let Some(p) = field.strip_prefix("p=") {
                let p: f64 = p
                    .parse()
                    .map_err(|_| format!("fault rule {s:?}: bad p={p}"))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("fault rule {s:?}: p must be within 0..1"));
                }
                rule.fraction = Some(p);
            } else {
                return Err(format!("fault rule {s:?}: unknown field {field:?}"));
            }
        }
        Ok(rule)
    }

    fn describe(&self) -> String {
        let kind = match self.kind {
            FaultKind::Internal => "500".to_string(),
            FaultKind::SlowDown => "503".to_string(),
            FaultKind::Denied => "403".to_string(),
            FaultKind::Reset => "reset".to_string(),
            FaultKind::Truncate => "truncate".to_string(),
            FaultKind::Delay(d) => format!("delay={}", d.as_millis()),
            FaultKind::Late(d) => format!("late={}", d.as_millis()),
        };
        let mut s = format!("{}:{kind}", self.operation.as_deref().unwrap_or("*"));
        if let Some(n) = self.remaining {
            s.push_str(&format!(":next={n}"));
        }
        if let Some(p) = self.fraction {
            s.push_str(&format!(":p={p}"));
        }
        s
    }
}

/// The active rules and the seeded generator.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<(Vec<FaultRule>, fastrand::Rng)>,
}

impl Faults {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> Faults {
        Faults {
            state: Mutex::new((rules, fastrand::Rng::with_seed(seed))),
        }
    }

    /// Adds rules after the existing ones.
    pub fn add(&self, rules: Vec<FaultRule>) {
        self.state.lock().0.extend(rules);
    }

    pub fn clear(&self) {
        self.state.lock().0.clear();
    }

    /// The active rules, one per line, in rule syntax.
    pub fn describe(&self) -> String {
        let state = self.state.lock();
        state.0.iter().map(|r| r.describe() + "\n").collect()
    }

    /// The fault for a request of `operation`, if a rule fires.
    pub fn decide(&self, operation: &str) -> Option<FaultKind> {
        let mut guard = self.state.lock();
        let (rules, rng) = &mut *guard;
        let mut fired = None;
        for rule in rules.iter_mut() {
            if rule.operation.as_deref().is_some_and(|op| op != operation) {
                continue;
            }
            if rule.remaining == Some(0) {
                continue;
            }
            if let Some(p) = rule.fraction
                && rng.f64() >= p
            {
                continue;
            }
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
            fired = Some(rule.kind);
            break;
        }
        rules.retain(|r| r.remaining != Some(0));
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print_back() {
        for text in [
            "GetObject:503:next=2",
            "*:reset:p=0.25",
            "PutObject:delay=150:next=1",
            "CreateMultipartUpload:late=900",
            "GetObject:truncate",
            "UploadPart:500:next=3:p=0.5",
        ] {
            assert_eq!(FaultRule::parse(text).unwrap().describe(), text);
        }
        for bad in [
            "",
            "GetObject",
            "GetObject:404",
            "*:503:p=2",
            "*:503:soon",
            "*:late=x",
        ] {
            assert!(FaultRule::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn next_n_hits_exactly_n_matching_requests() {
        let f = Faults::new(vec![FaultRule::parse("GetObject:503:next=2").unwrap()], 1);
        assert_eq!(f.decide("PutObject"), None);
        assert_eq!(f.decide("GetObject"), Some(FaultKind::SlowDown));
        assert_eq!(f.decide("GetObject"), Some(FaultKind::SlowDown));
        assert_eq!(f.decide("GetObject"), None);
        assert_eq!(f.describe(), "", "spent rules are dropped");
    }

    #[test]
    fn fractions_are_reproducible_with_a_seed() {
        let run = |seed| {
            let f = Faults::new(vec![FaultRule::parse("*:500:p=0.3").unwrap()], seed);
            (0..1000)
                .map(|_| f.decide("GetObject").is_some())
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same faults");
        assert_ne!(a, run(8));
        let hits = a.iter().filter(|h| **h).count();
        assert!((200..400).contains(&hits), "about 30% of 1000, got {hits}");
    }

    #[test]
    fn first_matching_rule_wins() {
        let f = Faults::new(
            vec![
                FaultRule::parse("GetObject:reset:next=1").unwrap(),
                FaultRule::parse("*:500").unwrap(),
            ],
            0,
        );
        assert_eq!(f.decide("GetObject"), Some(FaultKind::Reset));
        assert_eq!(f.decide("GetObject"), Some(FaultKind::Internal));
        f.clear();
        assert_eq!(f.decide("GetObject"), None);
    }
}
