//! The backend model: identity, address, weight, admin state, and live shared load.
//!
//! [`BackendLoad`] is the one piece of mutable state shared with the request path: the
//! proxy holds an `Arc<BackendLoad>` per backend and updates it around each request
//! (in-flight count, latency, consecutive failures) with atomics only. Everything else
//! about a backend lives in the [`Pool`](crate::Pool) and reaches the request path only
//! through an immutable [`Selector`](crate::Selector) snapshot.
//!
//! Nothing here reads the clock: latency is measured by the caller and passed in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::EwmaConfig;
use crate::ewma::AtomicPeakEwma;

/// Stable identity of a backend inside one pool; never reused after removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BackendId(pub u64);

impl std::fmt::Display for BackendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Largest weight a backend may have (keeps precomputed sequences bounded).
pub const MAX_WEIGHT: u32 = 1000;

/// What an operator (or the fleet) asks to add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSpec {
    /// Unique name; also the value carried in the sticky cookie and hashed by Maglev.
    pub name: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// Relative weight, 1..=[`MAX_WEIGHT`].
    pub weight: u32,
}

impl BackendSpec {
    /// A spec with weight 1 whose name is its address.
    pub fn from_addr(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        BackendSpec {
            name: addr.clone(),
            addr,
            weight: 1,
        }
    }
}

/// The operator's intent for a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Receives new requests when healthy and not ejected.
    Active,
    /// Receives no new requests; in-flight ones finish. Stays listed until re-activated
    /// or removed.
    Draining,
    /// Receives no new requests; dropped from the pool once its in-flight count is zero.
    Removed,
}

/// Result of the active health checks (see [`HealthState`](crate::HealthState)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Passing checks (or not checked).
    Healthy,
    /// Failed `fall` consecutive checks and has not yet passed `rise`.
    Unhealthy,
}

/// How one forwarded request ended, for passive outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Any response below 500, or a 5xx the operator does not count.
    Success,
    /// A 5xx response.
    ServerError,
    /// The connection could not be made (refused, timed out, reset before sending).
    ConnectFailure,
    /// The request was sent but no response came (reset, timeout).
    Failure,
}

impl Outcome {
    /// Classifies an HTTP status code (5xx are failures).
    pub fn from_status(status: u16) -> Self {
        if status >= 500 {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    }

    /// Whether this outcome counts as a failure for outlier detection.
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

/// Live, shared, lock-free load counters of one backend.
#[derive(Debug)]
pub struct BackendLoad {
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    ewma: AtomicPeakEwma,
}

impl BackendLoad {
    /// Fresh counters; the latency estimate starts at `config.default_rtt_ms`.
    pub fn new(config: &EwmaConfig, now: Instant) -> Self {
        BackendLoad {
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ewma: AtomicPeakEwma::new(
                Duration::from_millis(config.default_rtt_ms),
                Duration::from_millis(config.decay_ms),
                now,
            ),
        }
    }

    /// Marks a request as started; the returned guard decrements the in-flight count when
    /// dropped, so a cancelled request task cannot leak a count.
    pub fn start(self: &Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            load: Arc::clone(self),
        }
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests started since the backend was added.
    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that ended in a failure outcome since the backend was added.
    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Current run of consecutive failures.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Records a request's outcome and latency (`latency` only matters for responses);
    /// returns the run of consecutive failures after it (0 after a success). The caller
    /// compares this with `outlier.consecutive_failures` and asks the pool to eject.
    pub fn record(&self, outcome: Outcome, latency: Duration, now: Instant) -> u32 {
        // Failures count as latency samples too: a connect that took a timeout's length
        // is a peak that makes P2C avoid the backend at once.
        self.ewma.observe(latency, now);
        if outcome.is_failure() {
            self.failures.fetch_add(1, Ordering::Relaxed);
            self.consecutive_failures
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1)
        } else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            0
        }
    }

    /// Resets the consecutive-failure run (after an ejection).
    pub fn reset_failures(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// The peak-EWMA latency estimate in nanoseconds.
    pub fn latency_ns(&self, now: Instant) -> f64 {
        self.ewma.get_at(now)
    }

    /// P2C cost: peak-EWMA latency x (in-flight + 1), linkerd's load measure.
    pub fn cost(&self, now: Instant) -> f64 {
        self.latency_ns(now) * (self.in_flight() as f64 + 1.0)
    }
}

/// Decrements its backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    load: Arc<BackendLoad>,
}

impl InFlightGuard {
    /// The load counters this guard belongs to.
    pub fn load(&self) -> &Arc<BackendLoad> {
        &self.load
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts_in_flight_and_releases_on_drop() {
        let now = Instant::now();
        let load = Arc::new(BackendLoad::new(&EwmaConfig::default(), now));
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        drop(a);
        assert_eq!(load.in_flight(), 1);
        drop(b);
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.requests_total(), 2);
    }

    #[test]
    fn consecutive_failures_run_and_reset_on_success() {
        let now = Instant::now();
        let load = BackendLoad::new(&EwmaConfig::default(), now);
        let d = Duration::from_millis(1);
        assert_eq!(load.record(Outcome::ServerError, d, now), 1);
        assert_eq!(load.record(Outcome::ConnectFailure, d, now), 2);
        assert_eq!(load.record(Outcome::from_status(503), d, now), 3);
        assert_eq!(load.record(Outcome::from_status(404), d, now), 0);
        assert_eq!(load.consecutive_failures(), 0);
        assert_eq!(load.failures_total(), 3);
    }

    #[test]
    fn cost_grows_with_in_flight_and_latency() {
        let now = Instant::now();
        let load = Arc::new(BackendLoad::new(&EwmaConfig::default(), now));
        let idle = load.cost(now);
        let _g = load.start();
        assert!((load.cost(now) - 2.0 * idle).abs() < 1.0);
        load.record(Outcome::Success, Duration::from_secs(1), now);
        assert!(load.cost(now) >= 2e9);
    }
}
