//! The autoscaler shell: samples the balancer and the instances, builds the policy's
//! [`autoscale::ScalingInput`], calls the policy every tick and applies its decision.
//!
//! The arithmetic on samples is pure ([`interval_stats`], [`build_input`]);
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
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerSample {
    /// Requests received since start.
    pub requests_total: u64,
    /// Requests in flight now.
    pub in_flight: f64,
    /// Latency histogram of every response since start.
    pub latency: proxy::LatencyHistogram,
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

/// Fleet-wide RPS, in-flight and p99 over the interval between two snapshots.
pub fn interval_stats(
    prev: &BalancerSample,
    cur: &BalancerSample,
    elapsed: Duration,
) -> AggregateSample {
    let secs = elapsed.as_secs_f64();
    let rps =
        (secs > 0.0).then(|| cur.requests_total.saturating_sub(prev.requests_total) as f64 / secs);
    let p99_ms = if cur.latency.bounds_us == prev.latency.bounds_us {
        cur.latency
            .since(&prev.latency)
            .quantile_us(0.99)
            .map(|us| us as f64 / 1000.0)
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
            latency: proxy::LatencyHistogram {
                bounds_us: vec![1_000, 10_000, 100_000],
                cumulative,
                sum_us: 0,
            },
            backends: BTreeMap::new(),
        }
    }

    #[test]
    fn interval_stats_diff_two_snapshots() {
        let a = snap(1_000, vec![900, 990, 1000, 1000]);
        // 200 more requests: 100 under 1 ms, 70 under 10 ms, 30 under 100 ms.
        let b = snap(1_200, vec![1000, 1170, 1200, 1200]);
        let s = interval_stats(&a, &b, Duration::from_secs(2));
        assert_eq!(s.rps, Some(100.0));
        assert_eq!(s.in_flight, Some(3.0));
        // p99 falls in the 10-100 ms bucket (rank 198 of 200).
        let p99 = s.p99_ms.unwrap();
        assert!(p99 > 10.0 && p99 <= 100.0, "{p99}");
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
            oom_kills: 0,
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
