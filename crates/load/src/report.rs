//! The run report: the same fields in memory, in the JSON file and (summarised) on the
//! terminal. `Report` is what the library returns and what other crates (advisor, demo)
//! consume; field names carry their units.
//!
//! This module only shapes and renders numbers; it never measures anything.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::threshold::ThresholdResult;

/// Errors by kind. Connection errors, timeouts and status classes are counted apart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connection could not be established (refused, reset during connect, connect timeout).
    pub connect: u64,
    /// No complete response within the per-request timeout.
    pub timeout: u64,
    /// Responses with a 4xx status.
    pub status_4xx: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Anything else: connection closed mid-request, protocol errors, session step failed.
    pub other: u64,
    /// Sum of the above.
    pub total: u64,
}

/// Latency and counts of one request kind (one entry of the mix or session step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KindReport {
    /// The kind's name (`GET /`, or the scenario's request name).
    pub name: String,
    /// Requests of this kind sent.
    pub sent: u64,
    /// Responses received (any status).
    pub completed: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile latency, ms.
    pub p90_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// 99.9th percentile latency, ms.
    pub p999_ms: f64,
    /// Maximum latency, ms.
    pub max_ms: f64,
    /// Errors of this kind.
    pub errors: ErrorCounts,
}

/// Distribution of schedule lag (send time minus scheduled time), µs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagReport {
    /// Sends measured.
    pub count: u64,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Whether the dispatcher used the high-resolution timer (timerfd) throughout;
    /// `false` means tokio's 1 ms timer plus a spin.
    pub precise_timer: bool,
}

/// One time slice of the run (by the time events happened, from the start of the run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SliceReport {
    /// Start of the slice, seconds from the start of the run.
    pub t_s: f64,
    /// Requests due in the slice.
    pub scheduled: u64,
    /// Requests sent in the slice.
    pub sent: u64,
    /// Responses completed in the slice (any status).
    pub completed: u64,
    /// Errors in the slice.
    pub errors: u64,
    /// The same errors split by kind.
    pub error_kinds: ErrorCounts,
    /// Late sends in the slice.
    pub late_sends: u64,
    /// Completed per second in the slice.
    pub rps: f64,
    /// Median latency of responses completed in the slice, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// The result of one run. Serialised as the `--json` report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `open-loop` or `closed-loop`.
    pub mode: String,
    /// What "latency" means in this report.
    pub latency_measured: String,
    /// The target URLs.
    pub targets: Vec<String>,
    /// The rate profile's kind (`constant`, `ramp`, ...; `closed-loop` when none).
    pub profile: String,
    /// Scheduled length of the run, seconds.
    pub duration_s: f64,
    /// Wall time including the drain of in-flight requests, seconds.
    pub wall_s: f64,
    /// Generator threads.
    pub threads: usize,
    /// Connection cap (closed loop: the connection count).
    pub connections_max: usize,
    /// Connections opened during the run.
    pub connections_opened: u64,
    /// Connections opened to replace one that ended (the server closed it or asked to,
    /// e.g. nginx after `keepalive_requests`, or it broke); part of `connections_opened`.
    #[serde(default)]
    pub reconnects: u64,
    /// Target rate averaged over the run (open loop); 0 in closed loop.
    pub target_rps: f64,
    /// Responses completed (any status) per second of scheduled duration.
    pub achieved_rps: f64,
    /// Requests the schedule owed (open loop); equals `sent` in closed loop.
    pub scheduled: u64,
    /// Requests that left the generator.
    pub sent: u64,
    /// Responses received, any status.
    pub completed: u64,
    /// Scheduled requests never sent (queue full, or still queued when the run ended).
    pub dropped: u64,
    /// Sends that left later than their scheduled time by more than `late_threshold_ms`.
    pub late_sends: u64,
    /// The lateness that counts a send as late, ms.
    pub late_threshold_ms: f64,
    /// Open loop: how far behind its scheduled time each request left the generator
    /// (handed to the socket), µs: the generator's own error, already included in the
    /// latency. 0 in closed loop.
    #[serde(default)]
    pub schedule_lag: LagReport,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// `errors.total / sent`.
    pub error_rate: f64,
    /// Per request kind.
    pub per_kind: Vec<KindReport>,
    /// Per target URL (`name` is the URL), in the order given.
    pub per_target: Vec<KindReport>,
    /// Length of a time slice, ms.
    pub slice_ms: u64,
    /// Per time slice, in order.
    pub slices: Vec<SliceReport>,
    /// Threshold outcomes (including the built-in rate check in open loop).
    pub thresholds: Vec<ThresholdResult>,
    /// Whether every threshold held.
    pub passed: bool,
}

impl Report {
    /// Achieved over target rate (1.0 when there is no target, i.e. closed loop).
    pub fn rate_ratio(&self) -> f64 {
        if self.target_rps > 0.0 {
            self.achieved_rps / self.target_rps
        } else {
            1.0
        }
    }

    /// Thresholds that failed.
    pub fn failed_thresholds(&self) -> Vec<&ThresholdResult> {
        self.thresholds.iter().filter(|t| !t.passed).collect()
    }

    /// A report with zeros everywhere, for unit tests of code that reads reports.
    pub fn empty_for_tests() -> Report {
        Report::default()
    }

    /// The human summary printed at the end of a run.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "mode: {}  targets: {}  duration: {:.1}s  threads: {}  connections: {} opened (cap {})",
            self.mode,
            self.targets.join(", "),
            self.duration_s,
            self.threads,
            self.connections_opened,
            self.connections_max
        );
        let _ = writeln!(s, "latency: {}", self.latency_measured);
        if self.mode == "open-loop" {
            let _ = writeln!(
                s,
                "rate: target {:.1}/s  achieved {:.1}/s ({:.2}%)  profile {}",
                self.target_rps,
                self.achieved_rps,
                self.rate_ratio() * 100.0,
                self.profile
            );
            let _ = writeln!(
                s,
                "requests: scheduled {}  sent {}  completed {}  dropped {}  late sends {} (> {} ms behind schedule)",
                self.scheduled,
                self.sent,
                self.completed,
                self.dropped,
                self.late_sends,
                self.late_threshold_ms
            );
            let l = &self.schedule_lag;
            let _ = writeln!(
                s,
                "schedule lag us (send time - scheduled time): p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  timer {}",
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                if l.precise_timer {
                    "timerfd+spin"
                } else {
                    "tokio 1ms+spin"
                }
            );
        } else {
            let _ = writeln!(
                s,
                "rate: {:.1}/s (closed loop: as fast as {} connections go)",
                self.achieved_rps, self.connections_max
            );
            let _ = writeln!(
                s,
                "requests: sent {}  completed {}",
                self.sent, self.completed
            );
        }
        if self.reconnects > 0 {
            let _ = writeln!(
                s,
                "reconnects: {} (connections the server closed or asked to close, replaced)",
                self.reconnects
            );
        }
        let _ = writeln!(
            s,
            "latency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
        );
        let e = &self.errors;
        let _ = writeln!(
            s,
            "errors: {} ({:.3}%)  connect {}  timeout {}  4xx {}  5xx {}  other {}",
            e.total,
            self.error_rate * 100.0,
            e.connect,
            e.timeout,
            e.status_4xx,
            e.status_5xx,
            e.other
        );
        if self.per_kind.len() > 1 {
            for k in &self.per_kind {
                let _ = writeln!(
                    s,
                    "  {:<24} sent {:>8}  p50 {:>8.3}  p99 {:>8.3}  max {:>8.3}  errors {}",
                    k.name, k.sent, k.p50_ms, k.p99_ms, k.max_ms, k.errors.total
                );
            }
        }
        if self.per_target.len() > 1 {
            for k in &self.per_target {
                let _ = writeln!(
                    s,
                    "  {:<24} sent {:>8}  p50 {:>8.3}  p99 {:>8.3}  max {:>8.3}  errors {}",
                    k.name, k.sent, k.p50_ms, k.p99_ms, k.max_ms, k.errors.total
                );
            }
        }
        for t in &self.thresholds {
            let _ = writeln!(
                s,
                "threshold {:<16} {}  (actual {:.3} {}, bound {} {})",
                t.expr,
                if t.passed { "ok" } else { "FAILED" },
                t.actual,
                t.unit,
                t.bound,
                t.unit
            );
        }
        s
    }
}
