//! The autoscaler shell: samples the balancer and the instances, builds the policy's
//! [`autoscale::ScalingInput`], calls the policy every tick and applies its decision.
//!
//! The arithmetic on samples is pure ([`interval_stats`], [`quantile_us`], [`build_input`]);
//! [`Autoscaler::run`] only reads, calls and applies. It must never scale to zero and never
//! act on missing data: when the balancer's metrics are unavailable it holds the last
//! decision.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use autoscale::{AggregateSample, InstanceSample, Policy, ScalingDecision, ScalingInput};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cpu;
use crate::plan::Phase;
use crate::supervisor::{FleetHandle, FleetStatus};

/// A cumulative snapshot of the balancer's counters (diff two for an interval).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BalancerSample {
    /// Requests received since start.
    pub requests_total: u64,
    /// Requests in flight now.
    pub in_flight: f64,
    /// Upper bounds of the latency buckets, microseconds (the last may be `u64::MAX`).
    pub latency_bounds_us: Vec<u64>,
    /// Cumulative count per bucket (`<= bound`), since start.
    pub latency_cumulative: Vec<u64>,
    /// Per backend (by name): requests since start and in flight now.
    pub backends: BTreeMap<String, BackendSample>,
}

/// One backend's cumulative counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackendSample {
    /// Requests sent to it since it was added.
    pub requests_total: u64,
    /// Requests in flight to it now.
    pub in_flight: f64,
}

/// Where the autoscaler reads balancer metrics from.
pub trait MetricsSource: Send + Sync + 'static {
    /// A cumulative snapshot, or `None` when the balancer cannot be read.
    fn sample(&self) -> Option<BalancerSample>;
}

/// The value below which a fraction `q` of the observations in `counts` fall, from
/// bucket upper bounds (`bounds_us`) and per-bucket (non-cumulative) counts. Returns the
/// upper bound of the bucket holding the quantile; `None` with no observations.
pub fn quantile_us(bounds_us: &[u64], counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bounds_us.get(i).copied();
        }
    }
    bounds_us.last().copied()
}

/// Fleet-wide RPS, in-flight and p99 over the interval between two snapshots.
pub fn interval_stats(
    prev: &BalancerSample,
    cur: &BalancerSample,
    elapsed: Duration,
) -> AggregateSample {
    let secs = elapsed.as_secs_f64();
    let rps =
        (secs > 0.0).then(|| cur.requests_total.saturating_sub(prev.requests_total) as f64 / secs);
    let p99_ms = if cur.latency_bounds_us == prev.latency_bounds_us
        && cur.latency_cumulative.len() == prev.latency_cumulative.len()
    {
        // Cumulative-over-time, cumulative-over-buckets ("<= bound") counts: diff in time,
        // then turn into per-bucket counts.
        let diff: Vec<u64> = cur
            .latency_cumulative
            .iter()
            .zip(&prev.latency_cumulative)
            .map(|(c, p)| c.saturating_sub(*p))
            .collect();
        let per_bucket: Vec<u64> = diff
            .iter()
            .enumerate()
            .map(|(i, c)| c.saturating_sub(if i == 0 { 0 } else { diff[i - 1] }))
            .collect();
        quantile_us(&cur.latency_bounds_us, &per_bucket, 0.99).map(|us| {
            if us == u64::MAX {
                // Beyond the last finite bound: report that bound, the best we know.
                cur.latency_bounds_us
                    .iter()
                    .rev()
                    .find(|&&b| b != u64::MAX)
                    .copied()
                    .unwrap_or(0) as f64
                    / 1000.0
            } else {
                us as f64 / 1000.0
            }
        })
    } else {
        None
    };
    AggregateSample {
        rps,
        in_flight: Some(cur.in_flight.max(0.0)),
        p99_ms,
    }
}

/// CPU samples of one instance process: (ticks, when).
type CpuMark = (u64, Instant);

/// Builds the policy input from the fleet status, two balancer snapshots and per
/// instance CPU utilisation (fraction of the instance's cores, by id).
pub fn build_input(
    status: &FleetStatus,
    prev: &BalancerSample,
    cur: &BalancerSample,
    elapsed: Duration,
    cpu_by_id: &BTreeMap<String, f64>,
) -> ScalingInput {
    let secs = elapsed.as_secs_f64();
    let mut instances = Vec::new();
    for i in status
        .instances
        .iter()
        .filter(|i| i.phase != Phase::Retiring)
    {
        let ready = i.phase == Phase::Ready;
        let mut s = InstanceSample {
            ready,
            ..InstanceSample::default()
        };
        if ready && let Some(b) = cur.backends.get(&i.id) {
            s.in_flight = Some(b.in_flight.max(0.0));
            if let Some(p) = prev.backends.get(&i.id)
                && secs > 0.0
            {
                s.rps = Some(b.requests_total.saturating_sub(p.requests_total) as f64 / secs);
            }
        }
        if ready {
            s.cpu_utilisation = cpu_by_id.get(&i.id).copied();
        }
        instances.push(s);
    }
    ScalingInput {
        current: status.active() as u32,
        ready: status.ready() as u32,
        instances,
        aggregate: interval_stats(prev, cur, elapsed),
        startup_s: status.startup_s,
    }
}

/// What the autoscaler last saw and did, for the status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScalerStatus {
    /// Latest fleet-wide metrics (None until two samples exist or while unavailable).
    pub aggregate: Option<AggregateSample>,
    /// Mean CPU utilisation over ready instances (fraction of their cores).
    pub mean_cpu: Option<f64>,
    /// The last decision applied (or held).
    pub decision: Option<ScalingDecision>,
    /// Decisions that changed the desired count.
    pub changes: u64,
    /// Ticks on which metrics were unavailable and the decision was held.
    pub held: u64,
}

/// Runs a policy against a fleet.
pub struct Autoscaler<M: MetricsSource> {
    policy: Box<dyn Policy>,
    config: autoscale::Config,
    fleet: FleetHandle,
    metrics: M,
    status: watch::Sender<ScalerStatus>,
}

impl<M: MetricsSource> std::fmt::Debug for Autoscaler<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaler")
            .field("policy", &self.policy.name())
            .finish()
    }
}

impl<M: MetricsSource> Autoscaler<M> {
    /// Builds the policy from `config` (validated) to drive `fleet` from `metrics`.
    pub fn new(
        config: autoscale::Config,
        fleet: FleetHandle,
        metrics: M,
    ) -> Result<(Self, watch::Receiver<ScalerStatus>), autoscale::ConfigError> {
        let policy = autoscale::build_policy(&config)?;
        let (tx, rx) = watch::channel(ScalerStatus::default());
        Ok((
            Autoscaler {
                policy,
                config,
                fleet,
                metrics,
                status: tx,
            },
            rx,
        ))
    }

    /// Calls the policy every `tick` until `shutdown` fires.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let epoch = Instant::now();
        let tck = cpu::ticks_per_second();
        let cores = crate::process::available_cpus();
        let mut ticker = tokio::time::interval(self.config.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prev: Option<(BalancerSample, Instant)> = None;
        let mut cpu_marks: BTreeMap<u32, CpuMark> = BTreeMap::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = Instant::now();
            let fleet = self.fleet.status();

            // CPU per ready instance, as a fraction of its cores.
            let mut cpu_by_id = BTreeMap::new();
            let mut next_marks = BTreeMap::new();
            for i in fleet.instances.iter().filter(|i| i.phase == Phase::Ready) {
                let Some(pid) = i.pid else { continue };
                let Some(ticks) = cpu::read_ticks(pid) else {
                    continue;
                };
                if let Some(&(t0, at)) = cpu_marks.get(&pid) {
                    let used = cpu::utilisation(t0, ticks, now.duration_since(at), tck);
                    let its_cores = i.cpus.as_ref().map_or(cores, |c| c.len()).max(1);
                    cpu_by_id.insert(i.id.clone(), used / its_cores as f64);
                }
                next_marks.insert(pid, (ticks, now));
            }
            cpu_marks = next_marks;

            let Some(sample) = self.metrics.sample() else {
                // Unavailable balancer: hold whatever the fleet was last told.
                let held = self.fleet.desired().count;
                self.status.send_modify(|s| {
                    s.held += 1;
                    s.aggregate = None;
                    s.decision = Some(ScalingDecision::hold(
                        held,
                        format!("balancer metrics unavailable; holding {held}"),
                    ));
                });
                prev = None;
                continue;
            };
            let Some((before, at)) = prev.replace((sample.clone(), now)) else {
                continue;
            };
            let elapsed = now.duration_since(at);
            let input = build_input(&fleet, &before, &sample, elapsed, &cpu_by_id);
            let decision = self.policy.decide(now.duration_since(epoch), &input);
            let floor = self.config.min_instances.max(1);
            let desired = decision
                .desired
                .clamp(floor, self.config.max_instances.max(floor));
            let changed = desired != self.fleet.desired().count;
            if changed {
                tracing::info!(
                    from = self.fleet.desired().count,
                    to = desired,
                    reason = %decision.reason,
                    "autoscaler decision"
                );
                self.fleet.set_count(desired);
            }
            let mean_cpu = (!cpu_by_id.is_empty())
                .then(|| cpu_by_id.values().sum::<f64>() / cpu_by_id.len() as f64);
            self.status.send_modify(|s| {
                s.aggregate = Some(input.aggregate);
                s.mean_cpu = mean_cpu;
                s.decision = Some(ScalingDecision {
                    desired,
                    ..decision
                });
                s.changes += u64::from(changed);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(total: u64, cumulative: Vec<u64>) -> BalancerSample {
        BalancerSample {
            requests_total: total,
            in_flight: 3.0,
            latency_bounds_us: vec![1_000, 10_000, 100_000, u64::MAX],
            latency_cumulative: cumulative,
            backends: BTreeMap::new(),
        }
    }

    #[test]
    fn quantile_picks_the_bucket_holding_the_rank() {
        let b = [1, 2, 3, 4];
        assert_eq!(quantile_us(&b, &[0, 0, 0, 0], 0.99), None);
        assert_eq!(quantile_us(&b, &[100, 0, 0, 0], 0.99), Some(1));
        assert_eq!(quantile_us(&b, &[98, 1, 1, 0], 0.99), Some(2));
        assert_eq!(quantile_us(&b, &[90, 5, 4, 1], 0.99), Some(3));
        assert_eq!(quantile_us(&b, &[90, 5, 3, 2], 0.99), Some(4));
    }

    #[test]
    fn interval_stats_diff_two_snapshots() {
        let a = snap(1_000, vec![900, 990, 1000, 1000]);
        // 200 more requests: 100 under 1 ms, 80 under 10 ms, 20 under 100 ms.
        let b = snap(1_200, vec![1000, 1170, 1200, 1200]);
        let s = interval_stats(&a, &b, Duration::from_secs(2));
        assert_eq!(s.rps, Some(100.0));
        assert_eq!(s.in_flight, Some(3.0));
        assert_eq!(s.p99_ms, Some(100.0));
        // Nothing new: no p99 (not zero).
        let s = interval_stats(&b, &b, Duration::from_secs(1));
        assert_eq!(s.p99_ms, None);
        assert_eq!(s.rps, Some(0.0));
    }

    #[test]
    fn overflow_bucket_reports_the_last_finite_bound() {
        let a = snap(0, vec![0, 0, 0, 0]);
        let b = snap(10, vec![0, 0, 0, 10]);
        let s = interval_stats(&a, &b, Duration::from_secs(1));
        assert_eq!(s.p99_ms, Some(100.0));
    }

    #[test]
    fn input_counts_ready_and_starting_instances_and_per_backend_rates() {
        use crate::supervisor::InstanceStatus;
        let inst = |id: &str, phase| InstanceStatus {
            id: id.into(),
            seq: 0,
            slot: 0,
            generation: 0,
            phase,
            pid: Some(1),
            addr: None,
            cpus: None,
            restarts: 0,
            last_failure: None,
        };
        let status = FleetStatus {
            desired: 3,
            instances: vec![
                inst("a", Phase::Ready),
                inst("b", Phase::Starting),
                inst("c", Phase::Retiring),
            ],
            ..FleetStatus::default()
        };
        let mut prev = snap(0, vec![0, 0, 0, 0]);
        prev.backends.insert(
            "a".into(),
            BackendSample {
                requests_total: 10,
                in_flight: 0.0,
            },
        );
        let mut cur = snap(50, vec![50, 50, 50, 50]);
        cur.backends.insert(
            "a".into(),
            BackendSample {
                requests_total: 50,
                in_flight: 4.0,
            },
        );
        let cpu = BTreeMap::from([("a".to_string(), 0.5)]);
        let input = build_input(&status, &prev, &cur, Duration::from_secs(2), &cpu);
        assert_eq!(input.current, 2);
        assert_eq!(input.ready, 1);
        assert_eq!(input.instances.len(), 2);
        assert_eq!(input.instances[0].rps, Some(20.0));
        assert_eq!(input.instances[0].in_flight, Some(4.0));
        assert_eq!(input.instances[0].cpu_utilisation, Some(0.5));
        assert!(!input.instances[1].ready);
        assert_eq!(input.instances[1].in_flight, None);
        assert_eq!(input.aggregate.rps, Some(25.0));
    }
}
