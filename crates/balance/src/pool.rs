//! The backend pool: the mutable, pure state machine behind the selector snapshots.
//!
//! The proxy owns one [`Pool`] behind a mutex that is never held on the request path. It
//! feeds the pool inputs (admin changes, health-check results, failure runs from
//! [`BackendLoad::record`], the passage of time through [`Pool::tick`]) and, after each
//! change, publishes a fresh [`Selector`] from [`Pool::selector`] through `ArcSwap`.
//! Outputs are return values ([`Transition`], ejection ends, [`PoolEvent`]s) that the
//! shell turns into logs and metrics.
//!
//! Draining: `drain` and `remove` stop new picks at once (in the next snapshot). In-flight
//! requests keep their `Arc<BackendLoad>`; `tick` reports [`PoolEvent::Drained`] when a
//! draining backend's in-flight count reaches zero, and drops a removed backend then
//! ([`PoolEvent::Removed`]).
//!
//! Nothing here reads the clock, sleeps or does I/O.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::backend::{AdminState, BackendId, BackendLoad, BackendSpec, HealthStatus, MAX_WEIGHT};
use crate::config::BalanceConfig;
use crate::health::{CheckOutcome, Ejection, HealthState, Transition, ejection_allowed};
use crate::select::{Candidate, Eligibility, Selector};
use crate::slow_start;

/// A refused pool change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No backend with this id (never added, or already dropped).
    #[error("no backend with id {0}")]
    UnknownBackend(BackendId),
    /// A backend with this name is already in the pool.
    #[error("a backend named {0:?} already exists")]
    DuplicateName(String),
    /// Weight outside `1..=MAX_WEIGHT`.
    #[error("weight {0} is out of range 1..={MAX_WEIGHT}")]
    InvalidWeight(u32),
    /// Name empty, too long, or with characters unfit for a cookie value.
    #[error("invalid backend name {0:?}: use 1-128 letters, digits, '-', '_', '.', ':'")]
    InvalidName(String),
    /// Address not of the form `host:port`.
    #[error("invalid backend address {0:?}: expected host:port")]
    InvalidAddr(String),
}

/// Something that happened during [`Pool::tick`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PoolEvent {
    /// The backend's ejection time passed; it is eligible again (if healthy and active).
    Unejected(BackendId),
    /// A draining backend has no request in flight any more.
    Drained(BackendId),
    /// A removed backend had no request in flight and left the pool.
    Removed(BackendId),
}

/// What the admin API lists for one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Stable id.
    pub id: BackendId,
    /// Unique name.
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight after slow start.
    pub effective_weight: f64,
    /// Operator intent.
    pub admin: AdminState,
    /// Active-check status.
    pub health: HealthStatus,
    /// Whether passive detection has it ejected now.
    pub ejected: bool,
    /// Milliseconds until the ejection ends (0 when not ejected).
    pub ejected_for_ms: u64,
    /// Ejections in the current back-off series.
    pub ejections: u32,
    /// Whether new requests may go to it.
    pub eligible: bool,
    /// Whether its weight is still ramping up.
    pub slow_start: bool,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests started since it was added.
    pub requests_total: u64,
    /// Failed requests since it was added.
    pub failures_total: u64,
    /// Peak-EWMA latency estimate in milliseconds.
    pub latency_ewma_ms: f64,
}

#[derive(Debug)]
struct Entry {
    id: BackendId,
    name: Arc<str>,
    addr: Arc<str>,
    weight: u32,
    admin: AdminState,
    health: HealthState,
    ejection: Ejection,
    added_at: Option<Instant>,
    drained_reported: bool,
    /// False while the last active check could not connect (refused, reset, timeout).
    reachable: bool,
    load: Arc<BackendLoad>,
}

/// The set of backends with their admin, health and ejection state.
#[derive(Debug)]
pub struct Pool {
    config: BalanceConfig,
    entries: Vec<Entry>,
    next_id: u64,
}

fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn valid_addr(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(char::is_whitespace)
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

impl Pool {
    /// An empty pool. `config` should have passed [`BalanceConfig::validate`].
    pub fn new(config: BalanceConfig) -> Self {
        Pool {
            config,
            entries: Vec::new(),
            next_id: 1,
        }
    }

    /// The configuration the pool was built with.
    pub fn config(&self) -> &BalanceConfig {
        &self.config
    }

    /// Number of backends listed (draining and removed-but-busy ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no backend is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn check_spec(&self, spec: &BackendSpec) -> Result<(), PoolError> {
        if !valid_name(&spec.name) {
            return Err(PoolError::InvalidName(spec.name.clone()));
        }
        if !valid_addr(&spec.addr) {
            return Err(PoolError::InvalidAddr(spec.addr.clone()));
        }
        if !(1..=MAX_WEIGHT).contains(&spec.weight) {
            return Err(PoolError::InvalidWeight(spec.weight));
        }
        if self.entries.iter().any(|e| *e.name == *spec.name) {
            return Err(PoolError::DuplicateName(spec.name.clone()));
        }
        Ok(())
    }

    fn insert(
        &mut self,
        spec: BackendSpec,
        now: Instant,
        slow: bool,
    ) -> Result<BackendId, PoolError> {
        self.check_spec(&spec)?;
        let id = BackendId(self.next_id);
        self.next_id += 1;
        self.entries.push(Entry {
            id,
            name: spec.name.into(),
            addr: spec.addr.into(),
            weight: spec.weight,
            admin: AdminState::Active,
            health: HealthState::new(&self.config.health),
            ejection: Ejection::default(),
            added_at: slow.then_some(now),
            drained_reported: false,
            reachable: true,
            load: Arc::new(BackendLoad::new(&self.config.ewma, now)),
        });
        Ok(id)
    }

    /// Adds a backend at run time; its weight ramps up over the slow-start window.
    pub fn add(&mut self, spec: BackendSpec, now: Instant) -> Result<BackendId, PoolError> {
        self.insert(spec, now, true)
    }

    /// Adds a backend at start-up, at full weight at once (no slow start).
    pub fn add_initial(&mut self, spec: BackendSpec, now: Instant) -> Result<BackendId, PoolError> {
        self.insert(spec, now, false)
    }

    fn entry(&self, id: BackendId) -> Result<&Entry, PoolError> {
        self.entries
            .iter()
            .find(|e| e.id == id)
            .ok_or(PoolError::UnknownBackend(id))
    }

    fn entry_mut(&mut self, id: BackendId) -> Result<&mut Entry, PoolError> {
        self.entries
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or(PoolError::UnknownBackend(id))
    }

    /// The id of the backend named `name`.
    pub fn id_of(&self, name: &str) -> Option<BackendId> {
        self.entries.iter().find(|e| &*e.name == name).map(|e| e.id)
    }

    /// Ids of every listed backend, in insertion order.
    pub fn ids(&self) -> Vec<BackendId> {
        self.entries.iter().map(|e| e.id).collect()
    }

    /// The backend's address.
    pub fn addr(&self, id: BackendId) -> Result<Arc<str>, PoolError> {
        Ok(Arc::clone(&self.entry(id)?.addr))
    }

    /// The backend's shared load counters.
    pub fn load(&self, id: BackendId) -> Result<Arc<BackendLoad>, PoolError> {
        Ok(Arc::clone(&self.entry(id)?.load))
    }

    /// The backend's admin state.
    pub fn admin_state(&self, id: BackendId) -> Result<AdminState, PoolError> {
        Ok(self.entry(id)?.admin)
    }

    /// Stops new requests to the backend; in-flight ones finish. Re-activate with
    /// [`Pool::activate`].
    pub fn drain(&mut self, id: BackendId) -> Result<(), PoolError> {
        let e = self.entry_mut(id)?;
        if e.admin == AdminState::Active {
            e.admin = AdminState::Draining;
            e.drained_reported = false;
        }
        Ok(())
    }

    /// Stops new requests and drops the backend once nothing is in flight (see `tick`).
    pub fn remove(&mut self, id: BackendId) -> Result<(), PoolError> {
        let e = self.entry_mut(id)?;
        e.admin = AdminState::Removed;
        Ok(())
    }

    /// Makes a draining backend active again, with a fresh slow start.
    pub fn activate(&mut self, id: BackendId, now: Instant) -> Result<(), PoolError> {
        let slow = self.config.slow_start.window_ms > 0;
        let e = self.entry_mut(id)?;
        if e.admin != AdminState::Active {
            e.admin = AdminState::Active;
            e.added_at = slow.then_some(now);
        }
        Ok(())
    }

    /// Changes the backend's weight.
    pub fn set_weight(&mut self, id: BackendId, weight: u32) -> Result<(), PoolError> {
        if !(1..=MAX_WEIGHT).contains(&weight) {
            return Err(PoolError::InvalidWeight(weight));
        }
        self.entry_mut(id)?.weight = weight;
        Ok(())
    }

    /// Folds in one active health-check result (a failure counts as an answered one,
    /// see [`Pool::observe_check`]).
    pub fn observe_health(
        &mut self,
        id: BackendId,
        success: bool,
        now: Instant,
    ) -> Result<Option<Transition>, PoolError> {
        let outcome = if success {
            CheckOutcome::Pass
        } else {
            CheckOutcome::Fail
        };
        self.observe_check(id, outcome, now)
    }

    /// Folds in one active check result. Besides the rise/fall state it records whether
    /// the backend could be reached: in fail-open mode unreachable backends are picked
    /// only when no other backend answers. Returns a health transition, or `None`; the
    /// caller must also rebuild the selector when reachability changed
    /// ([`Pool::reachable`] before and after tells).
    pub fn observe_check(
        &mut self,
        id: BackendId,
        outcome: CheckOutcome,
        _now: Instant,
    ) -> Result<Option<Transition>, PoolError> {
        let e = self.entry_mut(id)?;
        e.reachable = outcome != CheckOutcome::Unreachable;
        Ok(e.health.observe(outcome.passed()))
    }

    /// Whether the last active check reached the backend (true before any check).
    pub fn reachable(&self, id: BackendId) -> Result<bool, PoolError> {
        Ok(self.entry(id)?.reachable)
    }

    /// The backend's active-check status.
    pub fn health(&self, id: BackendId) -> Result<HealthStatus, PoolError> {
        Ok(self.entry(id)?.health.status())
    }

    fn ejected_count(&self, now: Instant) -> (usize, usize) {
        let active = self
            .entries
            .iter()
            .filter(|e| e.admin == AdminState::Active);
        let size = active.clone().count();
        let ejected = active.filter(|e| e.ejection.is_ejected(now)).count();
        (ejected, size)
    }

    /// Passive detection: `consecutive` is the failure run returned by
    /// [`BackendLoad::record`]. Ejects the backend when the run reaches
    /// `outlier.consecutive_failures`, passive detection is on, it is not already ejected,
    /// and the pool's ejection cap allows it. Returns when the ejection ends.
    pub fn report_failures(
        &mut self,
        id: BackendId,
        consecutive: u32,
        now: Instant,
    ) -> Result<Option<Instant>, PoolError> {
        self.entry(id)?;
        if !self.config.outlier.enabled || consecutive < self.config.outlier.consecutive_failures {
            return Ok(None);
        }
        self.eject(id, now)
    }

    /// Ejects the backend now if not already ejected and the cap allows (Envoy's rule:
    /// the first ejection always; further ones while the ejected share of active
    /// backends is below `max_ejection_percent`). Returns when the ejection ends.
    pub fn eject(&mut self, id: BackendId, now: Instant) -> Result<Option<Instant>, PoolError> {
        let (ejected, size) = self.ejected_count(now);
        let outlier = self.config.outlier.clone();
        let e = self.entry_mut(id)?;
        if e.ejection.is_ejected(now) || !ejection_allowed(&outlier, ejected, size) {
            return Ok(None);
        }
        e.load.reset_failures();
        Ok(Some(e.ejection.eject(&outlier, now)))
    }

    /// Advances time: ends ejections whose time passed, reports drained backends, drops
    /// removed ones with nothing in flight. Call it periodically (e.g. every 100 ms) and
    /// rebuild the selector when it returns events.
    pub fn tick(&mut self, now: Instant) -> Vec<PoolEvent> {
        let mut events = Vec::new();
        for e in &mut self.entries {
            if e.ejection.expire(now) {
                events.push(PoolEvent::Unejected(e.id));
                e.load.reset_failures();
            }
            let idle = e.load.in_flight() == 0;
            match e.admin {
                AdminState::Draining if idle && !e.drained_reported => {
                    e.drained_reported = true;
                    events.push(PoolEvent::Drained(e.id));
                }
                AdminState::Removed if idle => events.push(PoolEvent::Removed(e.id)),
                _ => {}
            }
        }
        self.entries
            .retain(|e| !(e.admin == AdminState::Removed && e.load.in_flight() == 0));
        events
    }

    /// Whether the backend is draining (or removed) with nothing in flight.
    pub fn is_drained(&self, id: BackendId) -> Result<bool, PoolError> {
        let e = self.entry(id)?;
        Ok(e.admin != AdminState::Active && e.load.in_flight() == 0)
    }

    fn effective_weight(&self, e: &Entry, now: Instant) -> f64 {
        let factor = e.added_at.map_or(1.0, |at| {
            slow_start::weight_factor(&self.config.slow_start, at, now)
        });
        e.weight as f64 * factor
    }

    fn eligibility(&self, e: &Entry, now: Instant) -> Eligibility {
        match e.admin {
            AdminState::Active if e.health.is_healthy() && !e.ejection.is_ejected(now) => {
                Eligibility::Eligible
            }
            AdminState::Active if e.ejection.is_ejected(now) || !e.reachable => {
                Eligibility::Unreachable
            }
            AdminState::Active => Eligibility::Unavailable,
            AdminState::Draining | AdminState::Removed => Eligibility::Draining,
        }
    }

    /// The earliest time after `now` at which a snapshot built now goes stale: the next
    /// slow-start step or the end of an ejection.
    pub fn next_change_at(&self, now: Instant) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| e.admin == AdminState::Active)
            .flat_map(|e| {
                let step = e
                    .added_at
                    .and_then(|at| slow_start::next_step(&self.config.slow_start, at, now));
                let uneject = e.ejection.until().filter(|&u| u > now);
                [step, uneject]
            })
            .flatten()
            .min()
    }

    /// Builds the immutable snapshot the request path picks from.
    pub fn selector(&self, now: Instant) -> Selector {
        let candidates = self
            .entries
            .iter()
            .map(|e| Candidate {
                id: e.id,
                name: Arc::clone(&e.name),
                addr: Arc::clone(&e.addr),
                load: Arc::clone(&e.load),
                weight: self.effective_weight(e, now),
                eligibility: self.eligibility(e, now),
            })
            .collect();
        Selector::build(&self.config, candidates, self.next_change_at(now))
    }

    /// The admin API's view of every backend.
    pub fn statuses(&self, now: Instant) -> Vec<BackendStatus> {
        self.entries
            .iter()
            .map(|e| {
                let ejected = e.ejection.is_ejected(now);
                BackendStatus {
                    id: e.id,
                    name: e.name.to_string(),
                    addr: e.addr.to_string(),
                    weight: e.weight,
                    effective_weight: self.effective_weight(e, now),
                    admin: e.admin,
                    health: e.health.status(),
                    ejected,
                    ejected_for_ms: e
                        .ejection
                        .until()
                        .map_or(0, |u| u.saturating_duration_since(now).as_millis() as u64),
                    ejections: e.ejection.times(),
                    eligible: self.eligibility(e, now) == Eligibility::Eligible,
                    slow_start: e.added_at.is_some_and(|at| {
                        slow_start::in_slow_start(&self.config.slow_start, at, now)
                    }),
                    in_flight: e.load.in_flight(),
                    requests_total: e.load.requests_total(),
                    failures_total: e.load.failures_total(),
                    latency_ewma_ms: e.load.latency_ns(now) / 1e6,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
