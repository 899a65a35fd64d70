//! Counters and fixed-bucket latency histograms, updated with relaxed atomics on the
//! request path, and their Prometheus text rendering and plain snapshots.
//!
//! Everything here is lock-free and allocation-free to update. Snapshots are cumulative
//! (counters only go up) so a caller diffs two of them to get a rate or a quantile over an
//! interval. This module must never block or allocate on `record`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is `+Inf`).
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram of latencies with the fixed bounds [`LATENCY_BOUNDS_US`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; index `LATENCY_BOUNDS_US.len()` is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation of `us` microseconds.
    pub fn record(&self, us: u64) {
        let idx = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// A cumulative snapshot.
    pub fn snapshot(&self) -> LatencyHistogram {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut acc = 0;
        for b in &self.buckets {
            acc += b.load(Relaxed);
            cumulative.push(acc);
        }
        LatencyHistogram {
            bounds_us: LATENCY_BOUNDS_US.to_vec(),
            cumulative,
            sum_us: self.sum_us.load(Relaxed),
        }
    }
}

/// A cumulative latency histogram: `cumulative[i]` observations were `<= bounds_us[i]`;
/// the last entry (one more than `bounds_us`) is the total count (`+Inf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencyHistogram {
    /// Bucket upper bounds in microseconds.
    pub bounds_us: Vec<u64>,
    /// Cumulative counts, `bounds_us.len() + 1` entries.
    pub cumulative: Vec<u64>,
    /// Sum of all observations, microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// The observations made between `earlier` and `self` (both from the same histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        LatencyHistogram {
            bounds_us: self.bounds_us.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(earlier.cumulative.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// Estimated `q` quantile (0..=1) in microseconds, interpolating linearly inside the
    /// bucket as Prometheus' `histogram_quantile` does; `None` with no observations. A
    /// quantile that falls in the `+Inf` bucket returns the largest finite bound.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut prev_count = 0u64;
        let mut prev_bound = 0u64;
        for (i, &c) in self.cumulative.iter().enumerate() {
            if c as f64 >= rank {
                let Some(&bound) = self.bounds_us.get(i) else {
                    return self.bounds_us.last().copied();
                };
                let in_bucket = (c - prev_count) as f64;
                let frac = if in_bucket > 0.0 {
                    (rank - prev_count as f64) / in_bucket
                } else {
                    1.0
                };
                return Some(prev_bound + ((bound - prev_bound) as f64 * frac) as u64);
            }
            prev_count = c;
            prev_bound = self.bounds_us.get(i).copied().unwrap_or(prev_bound);
        }
        self.bounds_us.last().copied()
    }
}

/// Response counts by status class (1xx..5xx).
#[derive(Debug, Default)]
pub struct StatusClasses([AtomicU64; 5]);

impl StatusClasses {
    /// Counts one response with `status`.
    pub fn record(&self, status: u16) {
        let idx = (status / 100).clamp(1, 5) as usize - 1;
        self.0[idx].fetch_add(1, Relaxed);
    }

    /// Counts per class, index 0 = 1xx.
    pub fn snapshot(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

/// Proxy-wide counters.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests received from clients (including shed and refused ones).
    pub requests_total: AtomicU64,
    /// Responses sent to clients by status class.
    pub responses: StatusClasses,
    /// Requests being handled now.
    pub in_flight: AtomicI64,
    /// Retries sent to another backend.
    pub retries_total: AtomicU64,
    /// Retries wanted but refused because the retry budget was spent.
    pub retry_budget_exhausted_total: AtomicU64,
    /// Requests or connections shed with 503 (connection limit, all backends full).
    pub shed_total: AtomicU64,
    /// Client connections accepted.
    pub connections_total: AtomicU64,
    /// Client connections open now.
    pub connections_active: AtomicI64,
    /// Connections that had sent no complete request head, closed to make room for new
    /// ones (the pending share of `limits.max_connections` was full).
    pub connections_evicted_total: AtomicU64,
    /// 1 while the pool fails open (no backend passes its health check, so requests go
    /// to backends that fail it), else 0.
    pub fail_open: AtomicI64,
    /// Times the pool entered fail-open.
    pub fail_open_total: AtomicU64,
    /// Requests refused before forwarding by a request rule (CONNECT, Host, method).
    pub rejected_total: AtomicU64,
    /// End-to-end latency of client requests (to response headers).
    pub latency: Histogram,
}

/// Per-backend counters.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Requests sent to this backend (each retry attempt counts).
    pub requests_total: AtomicU64,
    /// Attempts that failed: transport error, timeout, or a 5xx answer.
    pub errors_total: AtomicU64,
    /// Responses by status class.
    pub responses: StatusClasses,
    /// Requests on this backend now (until the response body ends).
    pub in_flight: AtomicI64,
    /// Health transitions to healthy.
    pub health_up_total: AtomicU64,
    /// Health transitions to unhealthy.
    pub health_down_total: AtomicU64,
    /// Passive outlier ejections.
    pub ejections_total: AtomicU64,
    /// Latency to response headers of attempts on this backend.
    pub latency: Histogram,
}

/// Cumulative proxy-wide metrics, as returned by [`crate::ProxyHandle::metrics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyMetrics {
    /// Requests received from clients.
    pub requests_total: u64,
    /// Responses by class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses_by_class: [u64; 5],
    /// Requests being handled now (a gauge).
    pub in_flight: i64,
    /// Retries sent.
    pub retries_total: u64,
    /// Retries refused by the retry budget.
    pub retry_budget_exhausted_total: u64,
    /// Requests and connections shed with 503.
    pub shed_total: u64,
    /// Client connections accepted.
    pub connections_total: u64,
    /// Client connections open now (a gauge).
    pub connections_active: i64,
    /// Connections evicted before sending a request head (room for new clients).
    pub connections_evicted_total: u64,
    /// 1 while the pool fails open (a gauge).
    pub fail_open: i64,
    /// Times the pool entered fail-open.
    pub fail_open_total: u64,
    /// Requests refused by a request rule (CONNECT, Host, method length).
    pub rejected_total: u64,
    /// Client-facing latency histogram (to response headers).
    pub latency: LatencyHistogram,
}

impl ProxyCounters {
    /// A cumulative snapshot.
    pub fn snapshot(&self) -> ProxyMetrics {
        ProxyMetrics {
            requests_total: self.requests_total.load(Relaxed),
            responses_by_class: self.responses.snapshot(),
            in_flight: self.in_flight.load(Relaxed),
            retries_total: self.retries_total.load(Relaxed),
            retry_budget_exhausted_total: self.retry_budget_exhausted_total.load(Relaxed),
            shed_total: self.shed_total.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            connections_active: self.connections_active.load(Relaxed),
            connections_evicted_total: self.connections_evicted_total.load(Relaxed),
            fail_open: self.fail_open.load(Relaxed),
            fail_open_total: self.fail_open_total.load(Relaxed),
            rejected_total: self.rejected_total.load(Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// One backend's labels and counters for rendering.
pub struct BackendMetricsView<'a> {
    /// Backend name (label `backend`).
    pub name: &'a str,
    /// Its counters.
    pub counters: &'a BackendCounters,
    /// Current effective weight.
    pub weight: u32,
    /// 1 when the backend may receive new requests now.
    pub eligible: bool,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Renders Prometheus text exposition format (version 0.0.4).
pub fn render_prometheus(proxy: &ProxyCounters, backends: &[BackendMetricsView<'_>]) -> String {
    let mut out = String::with_capacity(4096 + backends.len() * 2048);
    let p = proxy.snapshot();
    let _ = writeln!(
        out,
        "# HELP scaleout_lb_requests_total Requests received from clients."
    );
    let _ = writeln!(out, "# TYPE scaleout_lb_requests_total counter");
    let _ = writeln!(out, "scaleout_lb_requests_total {}", p.requests_total);
    let _ = writeln!(
        out,
        "# HELP scaleout_lb_responses_total Responses sent to clients by status class."
    );
    let _ = writeln!(out, "# TYPE scaleout_lb_responses_total counter");
    for (i, c) in CLASSES.iter().enumerate() {
        let _ = writeln!(
            out,
            "scaleout_lb_responses_total{{class=\"{c}\"}} {}",
            p.responses_by_class[i]
        );
    }
    for (name, help, kind, value) in [
        (
            "scaleout_lb_in_flight",
            "Client requests being handled.",
            "gauge",
            p.in_flight,
        ),
        (
            "scaleout_lb_retries_total",
            "Retries sent to another backend.",
            "counter",
            p.retries_total as i64,
        ),
        (
            "scaleout_lb_retry_budget_exhausted_total",
            "Retries refused because the retry budget was spent.",
            "counter",
            p.retry_budget_exhausted_total as i64,
        ),
        (
            "scaleout_lb_shed_total",
            "Requests or connections shed with 503.",
            "counter",
            p.shed_total as i64,
        ),
        (
            "scaleout_lb_connections_total",
            "Client connections accepted.",
            "counter",
            p.connections_total as i64,
        ),
        (
            "scaleout_lb_connections_active",
            "Client connections open.",
            "gauge",
            p.connections_active,
        ),
        (
            "scaleout_lb_connections_evicted_total",
            "Connections closed before their first request head to make room for new ones.",
            "counter",
            p.connections_evicted_total as i64,
        ),
        (
            "scaleout_lb_fail_open",
            "1 while no backend passes its health check and the pool fails open.",
            "gauge",
            p.fail_open,
        ),
        (
            "scaleout_lb_fail_open_total",
            "Times the pool entered fail-open.",
            "counter",
            p.fail_open_total as i64,
        ),
        (
            "scaleout_lb_rejected_total",
            "Requests refused by a request rule (CONNECT, Host, method length).",
            "counter",
            p.rejected_total as i64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP scaleout_lb_request_duration_seconds Client request latency to response headers."
    );
    let _ = writeln!(out, "# TYPE scaleout_lb_request_duration_seconds histogram");
    write_histogram(
        &mut out,
        "scaleout_lb_request_duration_seconds",
        "",
        &p.latency,
    );

    let fams: [(&str, &str, &str); 7] = [
        (
            "scaleout_lb_backend_requests_total",
            "counter",
            "Attempts sent to the backend.",
        ),
        (
            "scaleout_lb_backend_errors_total",
            "counter",
            "Attempts that failed (transport, timeout, 5xx).",
        ),
        (
            "scaleout_lb_backend_in_flight",
            "gauge",
            "Requests on the backend now.",
        ),
        (
            "scaleout_lb_backend_health_transitions_total",
            "counter",
            "Active health check transitions.",
        ),
        (
            "scaleout_lb_backend_ejections_total",
            "counter",
            "Passive outlier ejections.",
        ),
        (
            "scaleout_lb_backend_weight",
            "gauge",
            "Effective weight (after slow start).",
        ),
        (
            "scaleout_lb_backend_eligible",
            "gauge",
            "1 when the backend receives new requests.",
        ),
    ];
    for (fam, kind, help) in fams {
        let _ = writeln!(out, "# HELP {fam} {help}\n# TYPE {fam} {kind}");
        for b in backends {
            let c = b.counters;
            let n = escape_label(b.name);
            match fam {
                "scaleout_lb_backend_requests_total" => {
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\"}} {}",
                        c.requests_total.load(Relaxed)
                    );
                }
                "scaleout_lb_backend_errors_total" => {
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\"}} {}",
                        c.errors_total.load(Relaxed)
                    );
                }
                "scaleout_lb_backend_in_flight" => {
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\"}} {}",
                        c.in_flight.load(Relaxed)
                    );
                }
                "scaleout_lb_backend_health_transitions_total" => {
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\",to=\"up\"}} {}",
                        c.health_up_total.load(Relaxed)
                    );
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\",to=\"down\"}} {}",
                        c.health_down_total.load(Relaxed)
                    );
                }
                "scaleout_lb_backend_ejections_total" => {
                    let _ = writeln!(
                        out,
                        "{fam}{{backend=\"{n}\"}} {}",
                        c.ejections_total.load(Relaxed)
                    );
                }
                "scaleout_lb_backend_weight" => {
                    let _ = writeln!(out, "{fam}{{backend=\"{n}\"}} {}", b.weight);
                }
                _ => {
                    let _ = writeln!(out, "{fam}{{backend=\"{n}\"}} {}", u8::from(b.eligible));
                }
            }
        }
    }
    let fam = "scaleout_lb_backend_responses_total";
    let _ = writeln!(
        out,
        "# HELP {fam} Backend responses by status class.\n# TYPE {fam} counter"
    );
    for b in backends {
        let n = escape_label(b.name);
        let classes = b.counters.responses.snapshot();
        for (i, c) in CLASSES.iter().enumerate() {
            let _ = writeln!(out, "{fam}{{backend=\"{n}\",class=\"{c}\"}} {}", classes[i]);
        }
    }
    let fam = "scaleout_lb_backend_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {fam} Backend latency to response headers.\n# TYPE {fam} histogram"
    );
    for b in backends {
        let labels = format!("backend=\"{}\",", escape_label(b.name));
        write_histogram(&mut out, fam, &labels, &b.counters.latency.snapshot());
    }
    out
}

fn write_histogram(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    for (i, bound) in h.bounds_us.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"{}\"}} {}",
            *bound as f64 / 1e6,
            h.cumulative[i]
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.count());
    let trimmed = labels.trim_end_matches(',');
    if trimmed.is_empty() {
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {}",
            h.sum_us as f64 / 1e6,
            h.count()
        );
    } else {
        let _ = writeln!(
            out,
            "{name}_sum{{{trimmed}}} {}\n{name}_count{{{trimmed}}} {}",
            h.sum_us as f64 / 1e6,
            h.count()
        );
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(800); // bucket <= 1000
        }
        for _ in 0..10 {
            h.record(40_000); // bucket <= 50_000
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.cumulative[3], 90);
        let p50 = s.quantile_us(0.5).unwrap();
        assert!((500..=1000).contains(&p50), "{p50}");
        let p99 = s.quantile_us(0.99).unwrap();
        assert!((25_000..=50_000).contains(&p99), "{p99}");
        let empty = Histogram::default().snapshot();
        assert_eq!(empty.quantile_us(0.5), None);
    }

    #[test]
    fn since_diffs_two_snapshots() {
        let h = Histogram::default();
        h.record(10);
        let a = h.snapshot();
        h.record(3_000_000);
        h.record(3_000_000);
        let d = h.snapshot().since(&a);
        assert_eq!(d.count(), 2);
        assert_eq!(d.cumulative[0], 0);
        assert!(d.quantile_us(0.5).unwrap() > 2_500_000);
    }

    #[test]
    fn status_classes() {
        let s = StatusClasses::default();
        s.record(200);
        s.record(503);
        s.record(101);
        s.record(999);
        assert_eq!(s.snapshot(), [1, 1, 0, 0, 2]);
    }

    #[test]
    fn prometheus_text_has_families() {
        let p = ProxyCounters::default();
        p.requests_total.fetch_add(3, Relaxed);
        p.latency.record(1500);
        let b = BackendCounters::default();
        b.responses.record(200);
        let text = render_prometheus(
            &p,
            &[BackendMetricsView {
                name: "b\"1",
                counters: &b,
                weight: 5,
                eligible: true,
            }],
        );
        assert!(text.contains("scaleout_lb_requests_total 3"));
        assert!(
            text.contains(
                "scaleout_lb_backend_responses_total{backend=\"b\\\"1\",class=\"2xx\"} 1"
            )
        );
        assert!(text.contains("scaleout_lb_request_duration_seconds_bucket{le=\"0.0025\"} 1"));
        assert!(
            text.contains(
                "scaleout_lb_backend_request_duration_seconds_count{backend=\"b\\\"1\"} 0"
            )
        );
    }
}
