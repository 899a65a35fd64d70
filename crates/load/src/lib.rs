//! Open-loop HTTP load generator: coordinated-omission-free latency, HDR histograms per
//! request kind and per time slice, rate profiles and scenarios, thresholds, a search
//! for the maximum sustainable rate, JSON and SVG reports.
//!
//! The library does the work; `scaleout load` is a thin layer over [`run`] and
//! [`find_max`]. Other crates (advisor, demo) call the same two functions.
//!
//! Architecture invariants: no pooled high-level HTTP client (each connection is a
//! `hyper::client::conn` handshake, owned by one worker); no per-sample storage (HDR
//! histograms only); nothing here reads environment variables or exits the process;
//! traffic goes to loopback unless `allow_remote` is set.

mod chart;
mod config;
mod engine;
mod error;
mod h1;
mod mix;
mod pacer;
mod profile;
mod progress;
mod report;
mod scenario;
mod search;
mod stats;
pub mod sweep;
mod threshold;
mod units;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use chart::write_svg;
pub use config::{Catalog, Mode, Progress, RequestSpec, RunConfig, SessionSpec, Target};
pub use error::LoadError;
/// The HTTP method type of [`RequestSpec::method`].
pub use http::Method;
pub use mix::Zipf;
pub use profile::{RateProfile, Schedule, Stage};
pub use report::{ErrorCounts, KindReport, LagReport, Report, SliceReport};
pub use scenario::{Scenario, load_scenario, parse_scenario};
pub use search::{SearchConfig, SearchReport, SearchStep, find_max};
pub use stats::{Outcome, Snapshot};
pub use sweep::ConcurrencySweep;
pub use threshold::{Threshold, ThresholdResult};
pub use units::{parse_duration, parse_duration_with};

/// Parses an HTTP method name (case-insensitive).
pub fn parse_method(name: &str) -> Result<Method, LoadError> {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes())
        .map_err(|_| LoadError::config("method", format!("{name:?} is not an HTTP method")))
}

use engine::{ResolvedTarget, ThreadMode, ThreadPlan};
use mix::KindTable;
use stats::{Acc, Aggregator};

/// What open-loop latency means, printed and written into every open-loop report.
pub const OPEN_LOOP_LATENCY: &str = "from the intended (scheduled) send time to the last byte of the response; queueing and connecting are included, so there is no coordinated omission";
/// What closed-loop latency means.
pub const CLOSED_LOOP_LATENCY: &str = "closed loop: from the actual send to the last byte of the response; the generator waits for each response before sending the next, so server stalls are hidden (coordinated omission); use for saturation throughput only";

/// Runs one load test and returns its report. Bad input (URL, config) and an
/// unreachable target are errors; anything the target does during the run is counted
/// in the report. Cancelling `cancel` stops scheduling at once and drains in-flight
/// requests (each bounded by the timeout).
pub async fn run(config: RunConfig, cancel: CancellationToken) -> Result<Report, LoadError> {
    run_observed(config, cancel, |_| {}).await
}

/// [`run`], calling `observe` with the running totals each time a time slice finishes
/// (within milliseconds of the slice's end): the snapshot's `through_s` says up to which
/// second its counts go. Progress lines are printed from the same snapshots.
pub async fn run_observed(
    config: RunConfig,
    cancel: CancellationToken,
    mut observe: impl FnMut(&Snapshot),
) -> Result<Report, LoadError> {
    config.validate()?;
    let parsed: Vec<Target> = config
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<Result<_, _>>()?;
    let mut resolved = Vec::with_capacity(parsed.len());
    for t in &parsed {
        resolved.push(resolve(t, config.allow_remote, config.timeout).await?);
    }
    let threads = config.threads;
    let agg = Arc::new(Aggregator::new(threads, config.slice));
    let kinds = KindTable::new(&config.requests, &parsed[0].path, config.session.as_ref());
    let names = kinds.names();
    let duration = config.duration();
    // A common start a little ahead, so every thread's schedule lines up.
    let start = Instant::now() + Duration::from_millis(50);
    let mut receivers = Vec::with_capacity(threads);
    for i in 0..threads {
        let mode = match &config.mode {
            Mode::OpenLoop { profile } => ThreadMode::Open {
                profile: profile.scaled(1.0 / threads as f64),
                phase: i as f64 / threads as f64,
            },
            Mode::ClosedLoop { connections, .. } => ThreadMode::Closed {
                connections: connections / threads + usize::from(i < connections % threads),
            },
        };
        let per_thread_conns = config.max_connections.div_ceil(threads).max(1);
        let users_cap = config
            .session
            .as_ref()
            .map(|s| {
                let conns = match &config.mode {
                    Mode::ClosedLoop { connections, .. } => connections.div_ceil(threads),
                    Mode::OpenLoop { .. } => 1,
                };
                (s.max_users / threads).max(conns).max(1)
            })
            .unwrap_or(0);
        let plan = ThreadPlan {
            index: i,
            start,
            duration,
            mode,
            targets: resolved.clone(),
            kinds: kinds.clone(),
            session: config.session.clone(),
            users_cap,
            catalog: config.catalog,
            timeout: config.timeout,
            slice: config.slice,
            late_threshold: config.late_threshold,
            max_connections: per_thread_conns,
            min_connections: config.min_connections.div_ceil(threads),
            max_queue: config.max_queue,
            h2c: config.h2c,
            seed: config.seed,
            agg: agg.clone(),
            cancel: cancel.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || {
                let _ = tx.send(engine::run_thread(plan));
            })
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        receivers.push(rx);
    }
    let mut view = progress::ProgressView::new(config.progress, &config.mode, duration);
    let mut results = Vec::with_capacity(threads);
    let mut reported: Option<u64> = None;
    for mut rx in receivers {
        let r = loop {
            // Registered before the snapshot is read, so a slice finishing in between
            // still wakes us.
            let finished = agg.finished.notified();
            let snap = agg.snapshot();
            if snap.last_slice != reported {
                reported = snap.last_slice;
                view.update(&snap);
                observe(&snap);
            }
            tokio::select! {
                r = &mut rx => break r,
                _ = finished => {}
            }
        };
        match r {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => return Err(LoadError::Runtime(e.to_string())),
            Err(_) => return Err(LoadError::Runtime("a load thread panicked".into())),
        }
    }
    let snap = agg.snapshot();
    if snap.last_slice != reported {
        view.update(&snap);
        observe(&snap);
    }
    view.finish();
    let wall = start.elapsed();
    let mut kinds_acc: Vec<Acc> = (0..names.len()).map(|_| Acc::new(3)).collect();
    let mut total = Acc::new(3);
    let mut targets_acc: Vec<Acc> = (0..parsed.len()).map(|_| Acc::new(3)).collect();
    let mut opened = 0;
    let mut reconnects = 0;
    let mut lag = stats::new_lag_hist();
    let mut precise = true;
    for r in &results {
        reconnects += r.reconnects;
        let _ = lag.add(&r.lag);
        precise &= r.precise_timer;
        total.merge(&r.total);
        for (t, a) in targets_acc.iter_mut().zip(&r.targets) {
            t.merge(a);
        }
        for (k, a) in kinds_acc.iter_mut().zip(&r.kinds) {
            k.merge(a);
        }
        opened += r.connections_opened;
    }
    let mut report = build_report(&config, &parsed, &total, &kinds_acc, &names, agg.slices());
    report.connections_opened = opened;
    report.reconnects = reconnects;
    if matches!(config.mode, Mode::OpenLoop { .. }) && !lag.is_empty() {
        let us = |q: f64| lag.value_at_quantile(q) as f64 / 1e3;
        report.schedule_lag = LagReport {
            count: lag.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: lag.max() as f64 / 1e3,
            precise_timer: precise,
        };
    }
    report.per_target = targets_acc
        .iter()
        .zip(&parsed)
        .map(|(a, t)| a.kind_report(&t.url))
        .collect();
    report.wall_s = wall.as_secs_f64();
    Ok(report)
}

/// Resolves a target, refuses non-loopback addresses unless allowed, and checks that a
/// connection can be made.
async fn resolve(
    t: &Target,
    allow_remote: bool,
    timeout: Duration,
) -> Result<ResolvedTarget, LoadError> {
    let unreachable = |reason: String| LoadError::Unreachable {
        target: format!("{}:{}", t.host, t.port),
        reason,
    };
    let lookup = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| unreachable("name resolution timed out".into()))?
    .map_err(|e| unreachable(format!("name resolution failed: {e}")))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    if addrs.is_empty() {
        return Err(unreachable("name resolves to no address".into()));
    }
    if !allow_remote && let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(LoadError::RemoteRefused {
            host: t.host.clone(),
            addr: a.ip().to_string(),
        });
    }
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]);
    let probe = timeout.min(Duration::from_secs(5));
    match tokio::time::timeout(probe, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(unreachable(format!("connect to {addr}: {e}"))),
        Err(_) => {
            return Err(unreachable(format!(
                "connect to {addr} timed out after {probe:?}"
            )));
        }
    }
    Ok(ResolvedTarget {
        addr,
        authority: t.authority.clone(),
    })
}

fn build_report(
    config: &RunConfig,
    targets: &[Target],
    total: &Acc,
    kinds: &[Acc],
    names: &[String],
    slices: Vec<SliceReport>,
) -> Report {
    let d = config.duration().as_secs_f64();
    let c = &total.counts;
    let h = &total.hist;
    let (mode, latency, profile, target_rps, scheduled, conns) = match &config.mode {
        Mode::OpenLoop { profile } => (
            "open-loop",
            OPEN_LOOP_LATENCY,
            profile.kind.clone(),
            profile.expected_count() / d,
            c.scheduled,
            config.max_connections,
        ),
        Mode::ClosedLoop { connections, .. } => (
            "closed-loop",
            CLOSED_LOOP_LATENCY,
            "closed-loop".to_string(),
            0.0,
            c.sent,
            *connections,
        ),
    };
    let pct = |q| stats::pct_ms(h, q);
    let mut report = Report {
        mode: mode.to_string(),
        latency_measured: latency.to_string(),
        targets: targets.iter().map(|t| t.url.clone()).collect(),
        profile,
        duration_s: d,
        wall_s: 0.0,
        threads: config.threads,
        connections_max: conns,
        connections_opened: 0,
        reconnects: 0,
        target_rps,
        achieved_rps: c.completed as f64 / d,
        scheduled,
        sent: c.sent,
        completed: c.completed,
        dropped: c.dropped,
        late_sends: c.late,
        late_threshold_ms: config.late_threshold.as_secs_f64() * 1e3,
        schedule_lag: LagReport::default(),
        p50_ms: pct(0.5),
        p90_ms: pct(0.9),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        max_ms: if h.is_empty() {
            0.0
        } else {
            h.max() as f64 / 1e3
        },
        mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1e3 },
        errors: c.errors.clone(),
        error_rate: c.errors.total as f64 / c.sent.max(1) as f64,
        per_kind: kinds
            .iter()
            .zip(names)
            .map(|(a, n)| a.kind_report(n))
            .collect(),
        per_target: Vec::new(),
        slice_ms: config.slice.as_millis() as u64,
        slices,
        thresholds: Vec::new(),
        passed: true,
    };
    let mut results = Vec::new();
    let user_rate_check = config
        .thresholds
        .iter()
        .any(|t| t.metric == threshold::Metric::RateRatio);
    if let (Mode::OpenLoop { .. }, Some(min), false) =
        (&config.mode, config.min_rate_ratio, user_rate_check)
    {
        let t = Threshold {
            expr: format!("rate>={}% (built-in)", min * 100.0),
            metric: threshold::Metric::RateRatio,
            op: threshold::Op::Ge,
            value: min,
        };
        results.push(t.check(&report));
    }
    results.extend(config.thresholds.iter().map(|t| t.check(&report)));
    report.passed = results.iter().all(|r| r.passed);
    report.thresholds = results;
    report
}
