//! The metrics a policy can target and the samples the shell (or the simulator) feeds in.
//!
//! Four metrics, from the balancer and the instances: in-flight requests (concurrency),
//! requests per second, CPU utilisation per instance and p99 latency. Any of them can be a
//! target ([`crate::Config`]'s `target_*` fields). This module only describes and reads
//! samples; it never decides anything.

use serde::{Deserialize, Serialize};

/// A metric a policy can track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Requests in flight (concurrency). Target: requests per instance.
    InFlight,
    /// Requests per second. Target: req/s per instance.
    Rps,
    /// CPU utilisation of an instance. Target: percent (0-100) of the instance's cores.
    Cpu,
    /// p99 latency. Target: milliseconds (a fleet-wide value, not per instance).
    P99Ms,
}

impl MetricKind {
    /// Every metric, in the order proposals are reported.
    pub const ALL: [MetricKind; 4] = [
        MetricKind::InFlight,
        MetricKind::Rps,
        MetricKind::Cpu,
        MetricKind::P99Ms,
    ];

    /// The name used in config keys, reasons and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::InFlight => "in_flight",
            MetricKind::Rps => "rps",
            MetricKind::Cpu => "cpu",
            MetricKind::P99Ms => "p99_ms",
        }
    }

    /// This metric's value in one instance sample. CPU is returned in percent, so it
    /// compares directly with `target_cpu_pct`.
    pub fn of_instance(self, s: &InstanceSample) -> Option<f64> {
        let v = match self {
            MetricKind::InFlight => s.in_flight,
            MetricKind::Rps => s.rps,
            MetricKind::Cpu => s.cpu_utilisation.map(|u| u * 100.0),
            MetricKind::P99Ms => s.p99_ms,
        };
        v.filter(|x| x.is_finite() && *x >= 0.0)
    }

    /// This metric's fleet-wide value at the balancer: the total for in-flight and RPS,
    /// the p99 for latency. CPU has no balancer-side value.
    pub fn of_aggregate(self, a: &AggregateSample) -> Option<f64> {
        let v = match self {
            MetricKind::InFlight => a.in_flight,
            MetricKind::Rps => a.rps,
            MetricKind::Cpu => None,
            MetricKind::P99Ms => a.p99_ms,
        };
        v.filter(|x| x.is_finite() && *x >= 0.0)
    }
}

impl std::fmt::Display for MetricKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The latest sample of one instance. `None` means "missing" (not scraped, scrape failed);
/// the HPA treats missing metrics conservatively, so do not fill in zeros.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InstanceSample {
    /// Passed readiness and admitted to the balancer. Starting instances are `false`.
    pub ready: bool,
    /// Requests in flight at this instance (the balancer's per-backend count).
    pub in_flight: Option<f64>,
    /// Requests per second served by this instance over the last interval.
    pub rps: Option<f64>,
    /// CPU utilisation as a fraction of the instance's cores (0.0-1.0, may exceed 1.0
    /// briefly when measured over a short interval).
    pub cpu_utilisation: Option<f64>,
    /// p99 latency of this instance's responses over the last interval, ms.
    pub p99_ms: Option<f64>,
}

impl InstanceSample {
    /// A ready instance with only its in-flight count known (handy in tests and docs).
    pub fn ready_with_in_flight(in_flight: f64) -> Self {
        Self {
            ready: true,
            in_flight: Some(in_flight),
            ..Self::default()
        }
    }

    /// A starting (not ready) instance with no metrics.
    pub fn starting() -> Self {
        Self::default()
    }
}

/// Fleet-wide values seen at the balancer over the last sample interval. `None` when the
/// balancer was unreachable or has no data.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AggregateSample {
    /// Requests per second through the balancer.
    pub rps: Option<f64>,
    /// Requests in flight through the balancer (all instances).
    pub in_flight: Option<f64>,
    /// p99 latency through the balancer, ms.
    pub p99_ms: Option<f64>,
}

/// Total demand for `metric` across the fleet: the balancer's aggregate when present,
/// else the sum over instances that reported it. Used by policies that work on totals
/// (KPA, default). `None` when nothing reported.
pub(crate) fn fleet_total(metric: MetricKind, input: &crate::ScalingInput) -> Option<f64> {
    if let Some(v) = metric.of_aggregate(&input.aggregate)
        && metric != MetricKind::P99Ms
    {
        return Some(v);
    }
    let mut any = false;
    let mut sum = 0.0;
    for s in &input.instances {
        if let Some(v) = metric.of_instance(s) {
            any = true;
            sum += v;
        }
    }
    any.then_some(sum)
}
