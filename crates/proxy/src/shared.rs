//! State shared by the workers, the control loop, the health checkers and the admin API.
//!
//! The request path reads only [`Shared::snapshot`] (an immutable [`Snapshot`] published
//! through `ArcSwap`), atomics, and the lock-free retry budget. The mutable pool lives in
//! [`Control`] behind a `std::sync::Mutex` that is only taken for short, synchronous
//! control-plane work (admin changes, health results, the rare ejection report) and is
//! never held across an `.await`. Snapshots are rebuilt by whoever changed the pool (off
//! the request path) or by the control loop on a timer (slow-start steps, ejection ends).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use balance::{
    BackendId, BackendSpec, BalanceConfig, HashKeySource, Pool, PoolEvent, RetryBudget, Selector,
};
use http::HeaderValue;
use http::uri::Authority;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::ProxyError;
use crate::metrics::{BackendCounters, ProxyCounters};

/// Per-backend data the request path needs beyond the selector's candidate.
#[derive(Debug)]
pub(crate) struct BackendRt {
    /// Stable id.
    pub id: BackendId,
    /// Unique name.
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// Parsed once, cloned into every upstream URI.
    pub authority: Authority,
    /// The address when `addr` is an IP literal (no resolution needed per connect).
    pub socket_addr: Option<std::net::SocketAddr>,
    /// Counters for metrics.
    pub counters: BackendCounters,
    /// `Set-Cookie` pinning a client to this backend (sticky strategy).
    pub set_cookie: HeaderValue,
    /// Cancels this backend's health checker.
    pub health_stop: CancellationToken,
}

/// What a worker picks from: the selector plus the runtime data of its candidates, in the
/// same order as `selector.candidates()`.
pub(crate) struct Snapshot {
    pub selector: Selector,
    pub rts: Vec<Arc<BackendRt>>,
}

impl Snapshot {
    /// The runtime data of a candidate returned by a pick.
    pub fn rt_of(&self, cand: &balance::Candidate) -> Option<&Arc<BackendRt>> {
        let all = self.selector.candidates();
        match all.iter().position(|c| std::ptr::eq(c, cand)) {
            Some(i) => self.rts.get(i),
            None => self.rts.iter().find(|r| r.id == cand.id),
        }
    }
}

/// The control plane: the pool and the runtime data of every listed backend.
pub(crate) struct Control {
    pub pool: Pool,
    pub rts: HashMap<BackendId, Arc<BackendRt>>,
}

pub(crate) struct Shared {
    pub config: Config,
    pub balance: BalanceConfig,
    pub hash_key: Option<HashKeySource>,
    pub counters: ProxyCounters,
    pub snapshot: ArcSwap<Snapshot>,
    control: Mutex<Control>,
    /// Wakes the control loop (a pool change that needs a tick or a rebuild).
    pub changed: Notify,
    pub budget: RetryBudget,
    /// Client connection slots of the public listener (all workers).
    pub admission: Arc<crate::admission::Admission>,
    /// Where health checkers run (the runtime that called `Proxy::bind`).
    pub runtime: tokio::runtime::Handle,
    /// Cancelled when the proxy stops: ends health checkers and the control loop.
    pub stop: CancellationToken,
    /// This balancer's pseudonym in `Via` (`scaleout-<16 hex>`, random per process): a
    /// request that arrives with it has looped back through a backend (508).
    pub via_token: String,
    /// `1.1 <via_token>`, appended to every forwarded request's `Via`.
    pub via: HeaderValue,
    /// Extra admin content set by the embedding process (read by admin requests only).
    pub admin_ext: std::sync::RwLock<Option<Arc<dyn crate::AdminExtension>>>,
}

impl Shared {
    pub fn new(config: Config, runtime: tokio::runtime::Handle) -> Arc<Shared> {
        let balance = config.balance();
        let now = Instant::now();
        let pool = Pool::new(balance.clone());
        let selector = pool.selector(now);
        let hash_key = balance.hash.key_source().ok();
        let via_token = format!("scaleout-{:016x}", rand::random::<u64>());
        Arc::new(Shared {
            via: crate::headers::via_value(&via_token),
            via_token,
            budget: RetryBudget::new(&balance.retry, now),
            admission: crate::admission::Admission::new(
                config.limits.max_connections as usize,
                config.limits.pending_connections_percent,
            ),
            hash_key,
            counters: ProxyCounters::default(),
            snapshot: ArcSwap::from_pointee(Snapshot {
                selector,
                rts: Vec::new(),
            }),
            control: Mutex::new(Control {
                pool,
                rts: HashMap::new(),
            }),
            changed: Notify::new(),
            runtime,
            stop: CancellationToken::new(),
            admin_ext: std::sync::RwLock::new(None),
            balance,
            config,
        })
    }

    /// Locks the control plane. Callers must not `.await` while holding the guard.
    pub fn control(&self) -> MutexGuard<'_, Control> {
        // A panic while holding the lock leaves a consistent pool (every change is one
        // call); keep serving.
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds and publishes the snapshot from `control` (called with the lock held,
    /// never from the request path).
    pub fn publish(&self, control: &Control, now: Instant) {
        let selector = control.pool.selector(now);
        let rts = selector
            .candidates()
            .iter()
            .filter_map(|c| control.rts.get(&c.id).cloned())
            .collect::<Vec<_>>();
        debug_assert_eq!(rts.len(), selector.candidates().len());
        let fail_open = selector.is_fail_open();
        // Why the pool has no eligible backend, for the log line: failing the active check
        // (a wrong health.path?) or passively ejected / refusing connections.
        let (failing_check, unreachable) =
            selector
                .candidates()
                .iter()
                .fold((0, 0), |(f, u), c| match c.eligibility {
                    balance::Eligibility::Unavailable => (f + 1, u),
                    balance::Eligibility::Unreachable => (f, u + 1),
                    _ => (f, u),
                });
        let old = self.snapshot.swap(Arc::new(Snapshot { selector, rts }));
        // Callers hold the control lock, so transitions are seen (and logged) once each.
        if fail_open != old.selector.is_fail_open() {
            self.counters.fail_open.store(i64::from(fail_open), Relaxed);
            if fail_open {
                self.counters.fail_open_total.fetch_add(1, Relaxed);
                tracing::error!(
                    backends = control.pool.len(),
                    failing_health_check = failing_check,
                    ejected_or_unreachable = unreachable,
                    "POOL FAILED OPEN: no backend is eligible ({failing_check} failing the active \
                     health check, {unreachable} passively ejected or refusing connections); \
                     requests now go to the ineligible backends, those that answer first. {}",
                    if failing_check > 0 {
                        "Check health.path and the backends."
                    } else {
                        "Check the backends' capacity, outlier and timeouts.connect_ms."
                    }
                );
            } else {
                tracing::warn!(
                    "pool no longer fails open: a backend passes its health check again"
                );
            }
        }
    }

    /// Adds a backend (`slow_start`: ramp its weight; false for start-up backends).
    pub fn add_backend(
        self: &Arc<Self>,
        spec: BackendSpec,
        slow_start: bool,
    ) -> Result<BackendId, ProxyError> {
        let authority: Authority = spec
            .addr
            .parse()
            .map_err(|_| ProxyError::Backend(format!("invalid backend address {:?}", spec.addr)))?;
        let set_cookie = HeaderValue::from_str(&format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax",
            self.balance.sticky.cookie, spec.name
        ))
        .map_err(|_| ProxyError::Backend(format!("invalid backend name {:?}", spec.name)))?;
        let now = Instant::now();
        let mut c = self.control();
        let id = if slow_start {
            c.pool.add(spec.clone(), now)
        } else {
            c.pool.add_initial(spec.clone(), now)
        }
        .map_err(|e| ProxyError::Backend(e.to_string()))?;
        let rt = Arc::new(BackendRt {
            id,
            name: spec.name.clone(),
            addr: spec.addr.clone(),
            authority,
            socket_addr: spec.addr.parse().ok(),
            counters: BackendCounters::default(),
            set_cookie,
            health_stop: self.stop.child_token(),
        });
        c.rts.insert(id, rt.clone());
        self.publish(&c, now);
        drop(c);
        if self.balance.health.enabled {
            crate::health::spawn_checker(self.clone(), rt);
        }
        self.changed.notify_one();
        tracing::info!(backend = %spec.name, addr = %spec.addr, weight = spec.weight, slow_start, "backend added");
        Ok(id)
    }

    fn id_of(c: &Control, name: &str) -> Result<BackendId, ProxyError> {
        c.pool
            .id_of(name)
            .ok_or_else(|| ProxyError::UnknownBackend(name.to_string()))
    }

    /// Stops new requests to `name` (in-flight ones finish).
    pub fn drain(&self, name: &str) -> Result<Arc<balance::BackendLoad>, ProxyError> {
        let mut c = self.control();
        let id = Self::id_of(&c, name)?;
        c.pool
            .drain(id)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        let load = c
            .pool
            .load(id)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        self.publish(&c, Instant::now());
        tracing::info!(backend = %name, "backend draining");
        Ok(load)
    }

    /// Removes `name`: no new requests; it leaves the pool once nothing is in flight.
    pub fn remove(&self, name: &str) -> Result<(), ProxyError> {
        let mut c = self.control();
        let id = Self::id_of(&c, name)?;
        c.pool
            .remove(id)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        if let Some(rt) = c.rts.get(&id) {
            rt.health_stop.cancel();
        }
        let now = Instant::now();
        self.apply_events(&mut c, now);
        self.publish(&c, now);
        tracing::info!(backend = %name, "backend removed");
        Ok(())
    }

    /// Sets `name`'s weight.
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<(), ProxyError> {
        let mut c = self.control();
        let id = Self::id_of(&c, name)?;
        c.pool
            .set_weight(id, weight)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        self.publish(&c, Instant::now());
        tracing::info!(backend = %name, weight, "backend re-weighted");
        Ok(())
    }

    /// Makes a draining backend active again.
    pub fn activate(&self, name: &str) -> Result<(), ProxyError> {
        let mut c = self.control();
        let id = Self::id_of(&c, name)?;
        let now = Instant::now();
        c.pool
            .activate(id, now)
            .map_err(|e| ProxyError::Backend(e.to_string()))?;
        self.publish(&c, now);
        drop(c);
        self.changed.notify_one();
        Ok(())
    }

    /// From the request path: a failure run reached the ejection threshold. Takes the
    /// control lock briefly (no await) and leaves the rebuild to the control loop.
    pub fn report_failures(&self, rt: &BackendRt, run: u32) {
        let now = Instant::now();
        let mut c = self.control();
        if let Ok(Some(until)) = c.pool.report_failures(rt.id, run, now) {
            rt.counters.ejections_total.fetch_add(1, Relaxed);
            drop(c);
            tracing::warn!(
                backend = %rt.name,
                run,
                ejected_for_ms = until.saturating_duration_since(now).as_millis() as u64,
                "backend ejected (passive outlier detection)"
            );
            self.changed.notify_one();
        }
    }

    /// Applies `tick` events (drops removed backends' runtime data). Returns whether
    /// anything happened.
    fn apply_events(&self, c: &mut Control, now: Instant) -> bool {
        let events = c.pool.tick(now);
        for ev in &events {
            match ev {
                PoolEvent::Removed(id) => {
                    if let Some(rt) = c.rts.remove(id) {
                        rt.health_stop.cancel();
                        tracing::info!(backend = %rt.name, "backend left the pool");
                    }
                }
                PoolEvent::Unejected(id) => {
                    if let Some(rt) = c.rts.get(id) {
                        tracing::info!(backend = %rt.name, "ejection over");
                    }
                }
                PoolEvent::Drained(id) => {
                    if let Some(rt) = c.rts.get(id) {
                        tracing::info!(backend = %rt.name, "backend drained");
                    }
                }
            }
        }
        !events.is_empty()
    }

    /// The control loop: ticks the pool and republishes the snapshot when something
    /// changed, a slow-start step or ejection end is due, or a removed backend may leave.
    pub async fn control_loop(self: Arc<Self>) {
        let mut rebuild_needed = false;
        loop {
            let now = Instant::now();
            let next = {
                let mut c = self.control();
                let changed = self.apply_events(&mut c, now);
                let stale = self.snapshot.load().selector.needs_rebuild(now);
                if changed || stale || rebuild_needed {
                    self.publish(&c, now);
                }
                rebuild_needed = false;
                // Removed/draining backends with requests in flight need ticks to be
                // dropped or reported; otherwise wake at the next scheduled change.
                let busy_leaving = c
                    .pool
                    .statuses(now)
                    .iter()
                    .any(|s| s.admin != balance::AdminState::Active && s.in_flight > 0);
                let scheduled = self.snapshot.load().selector.rebuild_at();
                let mut next = now + Duration::from_secs(1);
                if busy_leaving {
                    next = now + Duration::from_millis(20);
                }
                if let Some(at) = scheduled {
                    next = next.min(at.max(now + Duration::from_millis(5)));
                }
                next
            };
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = self.changed.notified() => rebuild_needed = true,
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {}
            }
        }
    }
}
