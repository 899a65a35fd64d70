//! Retry policy: which failures may be retried, and a budget so retries cannot storm.
//!
//! [`is_retryable`]: a request whose connection never opened was never sent, so any method
//! may go to another backend; otherwise only idempotent methods (RFC 9110 section 9.2.2)
//! are retried, and only after a failure that says nothing about the request itself
//! (reset, timeout, 502/503/504).
//!
//! [`should_retry`] is the whole decision for one failed attempt, as one pure function
//! (the proxy's forwarding paths call it and nothing else): retryable failure for the
//! method, a body that can be sent again, attempts left, and a backend not tried yet.
//! [`decide_retry`] adds the budget.
//!
//! [`RetryBudget`] follows linkerd's and Finagle's budgets: every request deposits, every
//! retry withdraws, and a retry is allowed while
//! `min_retries_per_s x ttl + budget_ratio x requests - retries >= 1` over the last `ttl`.
//! When a whole pool fails, retries are held to `budget_ratio` of traffic (plus the floor)
//! instead of multiplying it. Counts live in ten time buckets of atomics, so `deposit` and
//! `try_withdraw` take no lock; two racing withdrawals may overdraw by one each, which is
//! bounded by the concurrency and harmless. Every call takes `now`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::config::RetryConfig;

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The connection could not be opened: the request was never sent.
    Connect,
    /// The connection broke after the request was (maybe partly) sent.
    Reset,
    /// No response within the upstream timeout.
    Timeout,
    /// The backend answered with this status code.
    Status(u16),
}

impl FailureKind {
    /// Whether a response status is a failure that another backend may not repeat.
    pub fn is_retryable_status(status: u16) -> bool {
        matches!(status, 502..=504)
    }
}

/// Whether `method` is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE). Methods are
/// case-sensitive in HTTP, so `get` is not GET.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

/// Whether a request with `method` that failed with `failure` may be retried on another
/// backend (the budget still has to allow it).
pub fn is_retryable(method: &str, failure: FailureKind) -> bool {
    match failure {
        FailureKind::Connect => true,
        FailureKind::Reset | FailureKind::Timeout => is_idempotent(method),
        FailureKind::Status(s) => is_idempotent(method) && FailureKind::is_retryable_status(s),
    }
}

/// One failed attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryInput<'a> {
    /// The request's method (case-sensitive).
    pub method: &'a str,
    /// How the attempt failed.
    pub failure: FailureKind,
    /// Whether the request can be sent again: its body was empty or buffered whole.
    pub replayable: bool,
    /// Attempts made so far, the failed one included.
    pub attempts: u32,
    /// Most attempts per request (`retry.max_attempts`).
    pub max_attempts: u32,
    /// Backends that could still be picked: pickable and not tried yet (the one that just
    /// failed counts as tried).
    pub untried: usize,
}

/// Whether the failed attempt described by `input` should be retried on another backend,
/// before the budget is asked. Pure.
pub fn should_retry(input: &RetryInput<'_>) -> bool {
    input.replayable
        && input.attempts < input.max_attempts
        && input.untried > 0
        && is_retryable(input.method, input.failure)
}

/// The retry decision for one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Retry on another backend (one retry was withdrawn from the budget).
    Retry,
    /// Not retryable (method, failure, body, attempts or backends left).
    Stop,
    /// Retryable, but the budget is spent: give up (and count it).
    BudgetExhausted,
}

/// [`should_retry`], then a withdrawal from `budget` at `now`.
pub fn decide_retry(input: &RetryInput<'_>, budget: &RetryBudget, now: Instant) -> RetryDecision {
    if !should_retry(input) {
        RetryDecision::Stop
    } else if budget.try_withdraw(now) {
        RetryDecision::Retry
    } else {
        RetryDecision::BudgetExhausted
    }
}

const BUCKETS: usize = 10;

/// A time-windowed, lock-free retry budget shared by all requests of a pool.
#[derive(Debug)]
pub struct RetryBudget {
    origin: Instant,
    bucket_ms: u64,
    ratio: f64,
    reserve: f64,
    /// Per bucket: high 32 bits the bucket's epoch, low 32 bits the count.
    deposits: [AtomicU64; BUCKETS],
    withdrawals: [AtomicU64; BUCKETS],
}

fn pack(epoch: u32, count: u32) -> u64 {
    (epoch as u64) << 32 | count as u64
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

impl RetryBudget {
    /// An empty budget (only the per-second floor is available); `now` is its time origin.
    pub fn new(config: &RetryConfig, now: Instant) -> Self {
        let ttl_ms = config.ttl_ms.max(BUCKETS as u64);
        RetryBudget {
            origin: now,
            bucket_ms: ttl_ms / BUCKETS as u64,
            ratio: config.budget_ratio,
            reserve: config.min_retries_per_s as f64 * ttl_ms as f64 / 1000.0,
            deposits: Default::default(),
            withdrawals: Default::default(),
        }
    }

    fn epoch(&self, now: Instant) -> u32 {
        (now.saturating_duration_since(self.origin).as_millis() as u64 / self.bucket_ms) as u32
    }

    fn add(slots: &[AtomicU64; BUCKETS], epoch: u32) {
        let slot = &slots[epoch as usize % BUCKETS];
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            let (e, c) = unpack(cur);
            let next = if e == epoch {
                pack(e, c.saturating_add(1))
            } else if epoch.wrapping_sub(e) < u32::MAX / 2 {
                pack(epoch, 1)
            } else {
                // A caller with an older `now` than the bucket holds: count it in place.
                pack(e, c.saturating_add(1))
            };
            match slot.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    fn sum(slots: &[AtomicU64; BUCKETS], epoch: u32) -> u64 {
        slots
            .iter()
            .map(|s| unpack(s.load(Ordering::Relaxed)))
            .filter(|&(e, _)| epoch.wrapping_sub(e) < BUCKETS as u32)
            .map(|(_, c)| c as u64)
            .sum()
    }

    /// Records one request (call once per client request, not per attempt).
    pub fn deposit(&self, now: Instant) {
        Self::add(&self.deposits, self.epoch(now));
    }

    /// Retries still available at `now` (may be fractional).
    pub fn balance(&self, now: Instant) -> f64 {
        let epoch = self.epoch(now);
        self.reserve + self.ratio * Self::sum(&self.deposits, epoch) as f64
            - Self::sum(&self.withdrawals, epoch) as f64
    }

    /// Takes one retry from the budget if at least one is available.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        if self.balance(now) >= 1.0 {
            Self::add(&self.withdrawals, self.epoch(now));
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn idempotent_methods_retry_on_any_retryable_failure() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_retryable(m, FailureKind::Reset), "{m}");
            assert!(is_retryable(m, FailureKind::Timeout), "{m}");
            assert!(is_retryable(m, FailureKind::Status(503)), "{m}");
            assert!(!is_retryable(m, FailureKind::Status(500)), "{m}");
            assert!(!is_retryable(m, FailureKind::Status(404)), "{m}");
        }
    }

    #[test]
    fn non_idempotent_methods_retry_only_when_never_sent() {
        for m in ["POST", "PATCH", "CONNECT", "get"] {
            assert!(is_retryable(m, FailureKind::Connect), "{m}");
            assert!(!is_retryable(m, FailureKind::Reset), "{m}");
            assert!(!is_retryable(m, FailureKind::Timeout), "{m}");
            assert!(!is_retryable(m, FailureKind::Status(502)), "{m}");
        }
    }

    fn input(method: &str, failure: FailureKind) -> RetryInput<'_> {
        RetryInput {
            method,
            failure,
            replayable: true,
            attempts: 1,
            max_attempts: 3,
            untried: 1,
        }
    }

    #[test]
    fn should_retry_needs_every_condition() {
        assert!(should_retry(&input("GET", FailureKind::Reset)));
        assert!(should_retry(&input("POST", FailureKind::Connect)));
        assert!(!should_retry(&input("POST", FailureKind::Reset)));
        let base = input("GET", FailureKind::Status(503));
        assert!(should_retry(&base));
        for bad in [
            RetryInput {
                replayable: false,
                ..base
            },
            RetryInput {
                attempts: 3,
                ..base
            },
            RetryInput { untried: 0, ..base },
            RetryInput {
                failure: FailureKind::Status(500),
                ..base
            },
        ] {
            assert!(!should_retry(&bad), "{bad:?}");
        }
    }

    #[test]
    fn decide_withdraws_from_the_budget_only_when_retrying() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.0, 1, 1000), t0);
        assert_eq!(
            decide_retry(&input("POST", FailureKind::Reset), &b, t0),
            RetryDecision::Stop
        );
        let get = input("GET", FailureKind::Reset);
        assert_eq!(decide_retry(&get, &b, t0), RetryDecision::Retry);
        assert_eq!(decide_retry(&get, &b, t0), RetryDecision::BudgetExhausted);
    }

    fn cfg(ratio: f64, min: u32, ttl_ms: u64) -> RetryConfig {
        RetryConfig {
            budget_ratio: ratio,
            min_retries_per_s: min,
            ttl_ms,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn floor_allows_min_per_s_times_ttl_without_traffic() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.2, 10, 1000), t0);
        let allowed = (0..100).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn ratio_of_requests_is_allowed_and_no_more() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.2, 0, 10_000), t0);
        for _ in 0..1000 {
            b.deposit(t0);
        }
        let allowed = (0..1000).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(allowed, 200);
        // More requests earn more retries.
        for _ in 0..50 {
            b.deposit(t0);
        }
        assert_eq!((0..100).filter(|_| b.try_withdraw(t0)).count(), 10);
    }

    #[test]
    fn old_deposits_and_withdrawals_expire_after_the_ttl() {
        let t0 = Instant::now();
        let b = RetryBudget::new(&cfg(0.5, 0, 10_000), t0);
        for _ in 0..100 {
            b.deposit(t0);
        }
        assert_eq!((0..100).filter(|_| b.try_withdraw(t0)).count(), 50);
        assert!(!b.try_withdraw(t0 + Duration::from_secs(5)));
        // Past the window, both the deposits and the withdrawals are forgotten.
        let later = t0 + Duration::from_millis(10_000);
        assert_eq!(b.balance(later), 0.0);
        for _ in 0..10 {
            b.deposit(later);
        }
        assert_eq!((0..100).filter(|_| b.try_withdraw(later)).count(), 5);
    }

    #[test]
    fn concurrent_deposits_are_all_counted() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(RetryBudget::new(&cfg(1.0, 0, 10_000), t0));
        let ts: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..5000).for_each(|_| b.deposit(t0)))
            })
            .collect();
        ts.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(b.balance(t0), 20_000.0);
    }
}
