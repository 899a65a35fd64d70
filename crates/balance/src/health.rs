//! Health decisions: the active-check rise/fall state machine and passive outlier ejection.
//!
//! The proxy performs the HTTP checks and counts response outcomes; this module only
//! decides. [`HealthState::observe`] turns one check result into an optional transition.
//! [`Ejection`] tracks one backend's passive ejection: the k-th ejection lasts
//! `base_ejection_ms x 2^(k-1)`, capped at `max_ejection_ms` (Envoy multiplies linearly;
//! doubling backs off a flapping backend faster, which is what the issue asks for). The
//! count of ejections restarts when a backend has stayed un-ejected for `max_ejection_ms`.
//! [`ejection_allowed`] applies the share-of-pool cap with Envoy's semantics: the first
//! ejection is always allowed; a further one only while the ejected share is below
//! `max_ejection_percent`.
//!
//! Nothing here reads the clock; every time-dependent call takes `now`.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::HealthStatus;
use crate::config::{HealthConfig, OutlierConfig};

/// The result of one active check, as the proxy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckOutcome {
    /// The check passed (TCP connect succeeded, or the HTTP answer was 2xx/3xx).
    Pass,
    /// The backend answered, but not well (an HTTP check got 4xx/5xx or timed out after
    /// connecting): it is up but failing its check.
    Fail,
    /// The backend could not be reached (connection refused, reset or connect timeout).
    Unreachable,
}

impl CheckOutcome {
    /// Whether the check passed.
    pub fn passed(self) -> bool {
        self == CheckOutcome::Pass
    }
}

/// A change of active-check health status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Status before.
    pub from: HealthStatus,
    /// Status after.
    pub to: HealthStatus,
}

/// Active-check state of one backend: status plus the current run of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthState {
    status: HealthStatus,
    successes: u32,
    failures: u32,
    rise: u32,
    fall: u32,
}

impl HealthState {
    /// A backend starts healthy (the fleet registers instances once they are ready; a
    /// backend added by hand that is down fails `fall` checks and leaves).
    pub fn new(config: &HealthConfig) -> Self {
        Self::with_status(config, HealthStatus::Healthy)
    }

    /// A state that starts at `status`.
    pub fn with_status(config: &HealthConfig, status: HealthStatus) -> Self {
        HealthState {
            status,
            successes: 0,
            failures: 0,
            rise: config.rise.max(1),
            fall: config.fall.max(1),
        }
    }

    /// Current status.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Whether the status is healthy.
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }

    /// Folds in one check result; returns the transition when `fall` consecutive failures
    /// mark a healthy backend unhealthy, or `rise` consecutive successes the reverse.
    pub fn observe(&mut self, success: bool) -> Option<Transition> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.status == HealthStatus::Unhealthy && self.successes >= self.rise {
                return Some(self.switch(HealthStatus::Healthy));
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.status == HealthStatus::Healthy && self.failures >= self.fall {
                return Some(self.switch(HealthStatus::Unhealthy));
            }
        }
        None
    }

    fn switch(&mut self, to: HealthStatus) -> Transition {
        let from = self.status;
        self.status = to;
        self.successes = 0;
        self.failures = 0;
        Transition { from, to }
    }
}

/// Passive-ejection state of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ejection {
    until: Option<Instant>,
    times: u32,
    last_end: Option<Instant>,
}

impl Ejection {
    /// Whether the backend is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the current ejection ends, if one is recorded (even if already past).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Ejections in the current back-off series.
    pub fn times(&self) -> u32 {
        self.times
    }

    /// Length of the next ejection if it happened at `now`.
    pub fn next_duration(&self, config: &OutlierConfig, now: Instant) -> Duration {
        let k = self.series_len_at(config, now) + 1;
        ejection_duration(config, k)
    }

    fn series_len_at(&self, config: &OutlierConfig, now: Instant) -> u32 {
        match self.last_end {
            Some(end)
                if now.saturating_duration_since(end)
                    >= Duration::from_millis(config.max_ejection_ms) =>
            {
                0
            }
            _ => self.times,
        }
    }

    /// Ejects at `now`; returns when the ejection ends.
    pub fn eject(&mut self, config: &OutlierConfig, now: Instant) -> Instant {
        let k = self.series_len_at(config, now) + 1;
        let until = now + ejection_duration(config, k);
        self.times = k;
        self.until = Some(until);
        self.last_end = Some(until);
        until
    }

    /// Clears an ejection whose time has passed; returns true when it just ended.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.until {
            Some(u) if now >= u => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}

/// `base x 2^(k-1)`, capped at `max`, for the k-th ejection (k >= 1).
pub fn ejection_duration(config: &OutlierConfig, k: u32) -> Duration {
    let shift = k.saturating_sub(1).min(40);
    let ms = config
        .base_ejection_ms
        .saturating_mul(1u64 << shift)
        .min(config.max_ejection_ms);
    Duration::from_millis(ms)
}

/// Whether one more backend may be ejected when `ejected` of `pool_size` already are.
/// Envoy's rule: the first ejection is always allowed; a further one only while the
/// ejected share is strictly below `max_ejection_percent`.
pub fn ejection_allowed(config: &OutlierConfig, ejected: usize, pool_size: usize) -> bool {
    if pool_size == 0 {
        return false;
    }
    ejected == 0 || (ejected as u64 * 100) < (config.max_ejection_percent as u64 * pool_size as u64)
}

#[cfg(test)]
mod tests;
