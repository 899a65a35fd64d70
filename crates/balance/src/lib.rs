//! Pure load-balancing core: backend sets, selection strategies, health state, outlier
//! ejection, retry budget, slow start.
//!
//! This crate decides; the `proxy` crate acts. Architecture invariants: no tokio, no hyper,
//! no I/O, no clock reads (every time-dependent function takes `now: Instant`), no global
//! RNG (randomness arrives as a `u64` in [`PickRequest`] or as a seed).
//!
//! How the proxy drives it:
//! 1. `let mut pool = Pool::new(config)` (after `config.validate()`), `pool.add_initial(..)`.
//! 2. Publish `pool.selector(now)` in an `ArcSwap<Selector>`; republish after every pool
//!    change, after `pool.tick(now)` returns events, and when `selector.needs_rebuild(now)`.
//! 3. Per request: `selector.try_pick(&PickRequest { .. }, &tried, now)` (full backends,
//!    `max_in_flight_per_backend`, are skipped), then
//!    `let guard = pick.backend.load.start()`, forward, and
//!    `let run = load.record(outcome, latency, now)`; if `run >=
//!    config.outlier.consecutive_failures`, lock the pool and `report_failures(id, run, now)`.
//! 4. Retries: `retry::decide_retry(&RetryInput { .. }, &budget, now)` after a failed attempt
//!    (with `budget.deposit(now)` once per request), excluding the backends tried.
//! 5. Active checks: `pool.observe_health(id, ok, now)` per check result.

pub mod backend;
pub mod cidr;
pub mod config;
pub mod ewma;
pub mod hash;
pub mod health;
pub mod pool;
pub mod retry;
pub mod select;
pub mod slow_start;

pub use backend::{
    AdminState, BackendId, BackendLoad, BackendSpec, HealthStatus, InFlightGuard, MAX_WEIGHT,
    Outcome,
};
pub use config::{
    AllDownPolicy, BalanceConfig, ConfigError, EwmaConfig, HashConfig, HashKeySource, HealthConfig,
    OutlierConfig, RetryConfig, SlowStartConfig, StickyConfig, StrategyKind,
};
pub use ewma::{AtomicPeakEwma, PeakEwma};
pub use health::{CheckOutcome, Ejection, HealthState, Transition};
pub use pool::{BackendStatus, Pool, PoolError, PoolEvent};
pub use retry::{
    FailureKind, RetryBudget, RetryDecision, RetryInput, decide_retry, is_idempotent, is_retryable,
    should_retry,
};
pub use select::{Candidate, Eligibility, NoPick, Pick, PickRequest, Selector};
