//! The trace simulator: replays a demand trace against a policy with a capacity model and
//! reports SPEC elasticity metrics, SLO-violation time and instance-seconds.
//!
//! # The model (per second t)
//! - **Demand.** a_t = trace_t x (1 + noise), noise ~ N(0, noise_pct/100) from the seed
//!   (SplitMix64 + Box-Muller, written here so a seed gives the same run everywhere),
//!   floored at 0.
//! - **Instances.** Each instance serves `capacity_rps` req/s with `workers` concurrent
//!   slots (service time S = workers / capacity_rps). A launched instance is ready
//!   `startup_s` later. The balancer spreads load evenly over ready instances. Scale-in
//!   removes starting instances first, then ready ones (drain is not modelled).
//! - **Queue.** A fleet-wide fluid backlog B: work = a_t + B, served = min(work,
//!   ready x capacity), B' = work − served; requests that would wait longer than
//!   `max_queue_s` are dropped (timeouts).
//! - **Below saturation** (B' = 0), per instance with utilisation ρ = served_i /
//!   capacity_rps, the M/M/c approximations of Sakasegawa: P(wait) ≈ ρ^(√(2(c+1)) − 1),
//!   waiting time given a wait ~ Exp(mean S / (c (1 − ρ))); so in-flight (Little) =
//!   λ_i (S + P(wait) S / (c (1 − ρ))) and p99 ≈ 2 S + S / (c (1 − ρ)) ln(P(wait) / 0.01)
//!   (the service time's own p99 taken as 2 S; the wait term only when P(wait) > 1%).
//! - **Saturated** (B' > 0): every slot busy; in-flight per instance = c + B' / ready;
//!   CPU = 100%; p99 = p99 at ρ = 0.95 + B' / capacity (time to drain the backlog).
//! - **Metrics fed to the policy** (the same [`ScalingInput`] the fleet builds): per ready
//!   instance in-flight, RPS served, CPU utilisation (= ρ) and p99; starting instances as
//!   not ready with no metrics; balancer aggregate = arrivals, total in-flight, p99; the
//!   start-up time once one launched instance became ready.
//! - **Scoring.** SLO violated in second t when a_t > ready capacity or p99 > `slo_p99_ms`.
//!   Demand d_t = the fewest instances whose steady-state p99 at a_t meets the SLO (at
//!   least 1); supply s_t = ready instances. Instance-seconds count every instance,
//!   starting ones too (they are paid for).
//!
//! Never reads a clock or global RNG: same trace, policy, model and seed give the same
//! report, byte for byte.

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::elasticity::{Elasticity, elasticity, flaps};
use crate::metrics::{AggregateSample, InstanceSample};
use crate::rng::SplitMix64;
use crate::trace::Trace;
use crate::{ScalingInput, build_policy};

/// The capacity model of the simulated service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacityModel {
    /// Requests per second one instance serves at 100% utilisation.
    pub capacity_rps: f64,
    /// Concurrent requests one instance works on (service time = workers / capacity).
    pub workers: u32,
    /// Seconds from launch until an instance is ready.
    pub startup_s: u64,
    /// Standard deviation of multiplicative demand noise, percent of the trace value.
    pub noise_pct: f64,
    /// The latency SLO, ms (p99).
    pub slo_p99_ms: f64,
    /// Requests waiting longer than this are dropped, seconds.
    pub max_queue_s: f64,
    /// Instances at t = 0 (all ready); `None` = demand at t = 0, within min..=max.
    pub initial_instances: Option<u32>,
    /// Window for counting flaps (direction reversals), seconds.
    pub flap_window_s: u64,
    /// Start-up time jitter, percent: each launch takes `startup_s` x (1 + u) with u
    /// uniform in ±`startup_jitter_pct`/100, rounded to whole seconds (0 = off).
    pub startup_jitter_pct: f64,
    /// Chance, percent, that a launch fails when it would become ready (a crash during
    /// start-up); the fleet relaunches it at once, so it is ready one more start-up time
    /// later (at most 8 attempts are modelled). 0 = off.
    pub fail_start_pct: f64,
    /// For this many seconds after becoming ready an instance is cold (JIT, caches): its
    /// capacity ramps linearly from `cold_capacity_pct` to 100% (0 = off).
    pub cold_s: u64,
    /// Capacity of a just-ready instance, percent of `capacity_rps` (with `cold_s` > 0).
    pub cold_capacity_pct: f64,
}

impl Default for CapacityModel {
    fn default() -> Self {
        Self {
            capacity_rps: 100.0,
            workers: 8,
            startup_s: 30,
            noise_pct: 5.0,
            slo_p99_ms: 300.0,
            max_queue_s: 10.0,
            initial_instances: None,
            flap_window_s: 300,
            startup_jitter_pct: 0.0,
            fail_start_pct: 0.0,
            cold_s: 0,
            cold_capacity_pct: 100.0,
        }
    }
}

/// An invalid capacity model field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid capacity model: field `{field}`: {message}")]
pub struct ModelError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

impl CapacityModel {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |field, message| Err(ModelError { field, message });
        if !(self.capacity_rps.is_finite() && self.capacity_rps > 0.0) {
            return err("capacity_rps", "must be a finite number > 0");
        }
        if self.workers == 0 || self.workers > 100_000 {
            return err("workers", "must be 1..=100000");
        }
        if self.startup_s > 3600 {
            return err("startup_s", "must be 0..=3600");
        }
        if !(self.noise_pct.is_finite() && (0.0..=100.0).contains(&self.noise_pct)) {
            return err("noise_pct", "must be 0..=100");
        }
        if !(self.slo_p99_ms.is_finite() && self.slo_p99_ms > 2000.0 * self.service_s()) {
            return err(
                "slo_p99_ms",
                "must exceed twice the service time (workers / capacity_rps)",
            );
        }
        if !(self.max_queue_s.is_finite() && self.max_queue_s > 0.0) {
            return err("max_queue_s", "must be a finite number > 0");
        }
        if !(self.startup_jitter_pct.is_finite()
            && (0.0..=100.0).contains(&self.startup_jitter_pct))
        {
            return err("startup_jitter_pct", "must be 0..=100");
        }
        if !(self.fail_start_pct.is_finite() && (0.0..=50.0).contains(&self.fail_start_pct)) {
            return err("fail_start_pct", "must be 0..=50");
        }
        if self.cold_s > 3600 {
            return err("cold_s", "must be 0..=3600");
        }
        if !(self.cold_capacity_pct.is_finite()
            && self.cold_capacity_pct > 0.0
            && self.cold_capacity_pct <= 100.0)
        {
            return err("cold_capacity_pct", "must be in (0, 100]");
        }
        Ok(())
    }

    /// Capacity, rps, of an instance that has been ready for `age_s` seconds (cold
    /// instances serve less, see `cold_s`).
    pub fn capacity_at_age(&self, age_s: u64) -> f64 {
        if age_s >= self.cold_s {
            return self.capacity_rps;
        }
        let cold = self.cold_capacity_pct / 100.0;
        self.capacity_rps * (cold + (1.0 - cold) * age_s as f64 / self.cold_s as f64)
    }

    /// Seconds from launch until ready for one launch, drawing jitter and failed
    /// attempts from `rng` (no draw when both are off). Returns (total seconds, seconds
    /// of the successful attempt: what the fleet measures).
    fn launch_time(&self, rng: &mut SplitMix64) -> (u64, u64) {
        let mut total = 0;
        let mut last = self.one_attempt(rng);
        let mut attempts = 1;
        while self.fail_start_pct > 0.0 && attempts < 8 && rng.chance(self.fail_start_pct / 100.0) {
            total += last;
            last = self.one_attempt(rng);
            attempts += 1;
        }
        (total + last, last)
    }

    fn one_attempt(&self, rng: &mut SplitMix64) -> u64 {
        if self.startup_jitter_pct > 0.0 {
            let j = self.startup_jitter_pct / 100.0;
            (self.startup_s as f64 * rng.uniform(1.0 - j, 1.0 + j)).round() as u64
        } else {
            self.startup_s
        }
    }

    /// Mean service time, seconds.
    pub fn service_s(&self) -> f64 {
        f64::from(self.workers) / self.capacity_rps
    }

    fn p_wait(&self, rho: f64) -> f64 {
        let c = f64::from(self.workers);
        rho.powf((2.0 * (c + 1.0)).sqrt() - 1.0)
    }

    /// Steady-state p99, ms, of one instance receiving `rps` (infinite at or above
    /// capacity).
    pub fn steady_p99_ms(&self, rps: f64) -> f64 {
        let rho = rps / self.capacity_rps;
        if rho >= 1.0 {
            return f64::INFINITY;
        }
        let s = self.service_s();
        let c = f64::from(self.workers);
        let pw = self.p_wait(rho);
        let wait = if pw > 0.01 {
            s / (c * (1.0 - rho)) * (pw / 0.01).ln()
        } else {
            0.0
        };
        (2.0 * s + wait) * 1000.0
    }

    /// Steady-state in-flight requests of one instance receiving `rps` (< capacity).
    pub fn steady_in_flight(&self, rps: f64) -> f64 {
        let rho = (rps / self.capacity_rps).min(0.999);
        let s = self.service_s();
        let c = f64::from(self.workers);
        rps * (s + self.p_wait(rho) * s / (c * (1.0 - rho)))
    }

    /// The highest utilisation at which the steady-state p99 meets the SLO.
    pub fn max_utilisation_for_slo(&self) -> f64 {
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if self.steady_p99_ms(mid * self.capacity_rps) <= self.slo_p99_ms {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// One simulated second (for timelines and charts).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tick {
    /// Second.
    pub t: u64,
    /// Arrivals, req/s (with noise).
    pub arrivals_rps: f64,
    /// Instances needed to meet the SLO.
    pub demand: u32,
    /// Ready instances.
    pub ready: u32,
    /// All instances (ready + starting).
    pub instances: u32,
    /// The policy's desired count at the end of the second.
    pub desired: u32,
    /// Backlog at the end of the second, requests.
    pub backlog: f64,
    /// p99, ms (capped at 1e6 for JSON).
    pub p99_ms: f64,
    /// Whether the SLO was violated.
    pub slo_violated: bool,
    /// Whether the policy was panicking.
    pub panic: bool,
}

/// The outcome of one simulation. JSON field names are the plain metric names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The policy's name.
    pub policy: String,
    /// The seed of the demand noise.
    pub seed: u64,
    /// Trace length, seconds.
    pub duration_s: u64,
    /// Seconds in which demand exceeded ready capacity or p99 exceeded the SLO.
    pub slo_violation_s: u64,
    /// Sum over seconds of all instances (starting ones included).
    pub instance_seconds: u64,
    /// Share of time supply and demand moved in opposite directions, percent.
    pub instability_pct: f64,
    /// Mean relative under-provisioning, percent.
    pub accuracy_under_pct: f64,
    /// Mean relative over-provisioning, percent.
    pub accuracy_over_pct: f64,
    /// Share of time under-provisioned, percent.
    pub timeshare_under_pct: f64,
    /// Share of time over-provisioned, percent.
    pub timeshare_over_pct: f64,
    /// (supply adaptations − demand adaptations) per minute.
    pub jitter_per_min: f64,
    /// Seconds in which the ready count changed.
    pub supply_adaptations: u64,
    /// Seconds in which the demand (instances needed) changed.
    pub demand_adaptations: u64,
    /// Direction reversals of the instance count within `flap_window_s`.
    pub flaps: u64,
    /// Decisions that raised the count.
    pub scale_ups: u64,
    /// Decisions that lowered the count.
    pub scale_downs: u64,
    /// Largest instance count.
    pub peak_instances: u32,
    /// Requests dropped because they waited longer than `max_queue_s`.
    pub dropped_requests: u64,
    /// Requests that arrived.
    pub arrived_requests: u64,
    /// Highest p99 in any second, ms (capped at 1e6).
    pub max_p99_ms: f64,
    /// Seconds the policy reported panic mode.
    pub panic_s: u64,
    /// The capacity model used.
    pub model: CapacityModel,
}

/// A report and its per-second timeline.
#[derive(Debug, Clone)]
pub struct SimRun {
    /// The summary.
    pub report: SimReport,
    /// One entry per second of the trace.
    pub timeline: Vec<Tick>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    /// The policy config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The capacity model is invalid.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Replays `trace` against the policy `cfg` describes under `model`, with demand noise
/// from `seed`.
pub fn simulate(
    trace: &Trace,
    cfg: &Config,
    model: &CapacityModel,
    seed: u64,
) -> Result<SimRun, SimError> {
    model.validate()?;
    let mut policy = build_policy(cfg)?;
    let mut rng = SplitMix64(seed);
    let mu = model.capacity_rps;
    let c = f64::from(model.workers);
    let rho_slo = model.max_utilisation_for_slo().max(1e-6);
    let demand_of = |a: f64| -> u32 { ((a / (mu * rho_slo)) - 1e-9).ceil().max(1.0) as u32 };
    let sat_p99 = model.steady_p99_ms(0.95 * mu);

    let first = trace.rps.first().copied().unwrap_or(0.0);
    let n0 = model
        .initial_instances
        .unwrap_or_else(|| demand_of(first))
        .clamp(cfg.min_instances, cfg.max_instances);
    // (ready_at second, seconds of its successful start-up attempt; None for the
    // instances present at t = 0) per instance.
    let mut instances: Vec<(u64, Option<u64>)> = vec![(0, None); n0 as usize];
    let mut launch_rng = SplitMix64::stream(seed, 3);
    let mut measured_startup: Option<f64> = None;
    let mut backlog = 0.0f64;
    let mut timeline = Vec::with_capacity(trace.rps.len());
    let (mut dropped, mut arrived) = (0.0f64, 0.0f64);
    let (mut violation, mut inst_s, mut ups, mut downs, mut panic_s) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut peak = n0;
    let mut max_p99 = 0.0f64;

    for (t, &base) in trace.rps.iter().enumerate() {
        let t = t as u64;
        let noise = if model.noise_pct > 0.0 {
            1.0 + model.noise_pct / 100.0 * rng.normal()
        } else {
            1.0
        };
        let a = (base * noise).max(0.0);
        arrived += a;
        let ready = instances.iter().filter(|&&(r, _)| r <= t).count() as u32;
        // The fleet reports the start-up of the instance that became ready last.
        if let Some(took) = instances
            .iter()
            .filter(|&&(r, _)| r == t)
            .filter_map(|&(_, took)| took)
            .next_back()
        {
            measured_startup = Some(took as f64);
        }
        // Ready capacity: full instances, minus what cold ones lack.
        let cold_deficit: f64 = if model.cold_s > 0 {
            instances
                .iter()
                .filter(|&&(r, took)| r <= t && took.is_some())
                .map(|&(r, _)| mu - model.capacity_at_age(t - r))
                .sum()
        } else {
            0.0
        };
        let cap = f64::from(ready) * mu - cold_deficit;
        // Cold instances are slower: per-instance latency and concurrency scale by
        // full / average capacity (1 when none is cold).
        let slow = if ready > 0 {
            f64::from(ready) * mu / cap
        } else {
            1.0
        };
        let work = a + backlog;
        let served = work.min(cap);
        backlog = work - served;
        let max_backlog = model.max_queue_s * cap.max(mu);
        if backlog > max_backlog {
            dropped += backlog - max_backlog;
            backlog = max_backlog;
        }
        let (in_flight_i, rps_i, cpu_i, p99) = if ready == 0 {
            (
                0.0,
                0.0,
                0.0,
                if a > 0.0 || backlog > 0.0 {
                    1e6
                } else {
                    2000.0 * model.service_s()
                },
            )
        } else if backlog > 1e-9 {
            let r = f64::from(ready);
            (
                c + backlog / r,
                served / r,
                served / cap,
                sat_p99 * slow + backlog / cap * 1000.0,
            )
        } else if cold_deficit == 0.0 {
            let r = f64::from(ready);
            let per = served / r;
            let p99 = model.steady_p99_ms(per.min(0.999 * mu));
            (model.steady_in_flight(per), per, per / mu, p99)
        } else {
            // Some instances are cold: at utilisation rho an instance holds the same
            // concurrency whatever its speed (Little: lambda x S = rho x c), and its
            // latency is `slow` times longer.
            let rho = served / cap;
            let full = (rho * mu).min(0.999 * mu);
            (
                model.steady_in_flight(full),
                served / f64::from(ready),
                rho,
                model.steady_p99_ms(full) * slow,
            )
        };
        let p99 = p99.min(1e6);
        max_p99 = max_p99.max(p99);
        let violated = a > cap || p99 > model.slo_p99_ms;
        violation += u64::from(violated);
        let demand = demand_of(a);

        let mut samples = Vec::with_capacity(instances.len());
        for &(r, _) in &instances {
            if r <= t {
                samples.push(InstanceSample {
                    ready: true,
                    in_flight: Some(in_flight_i),
                    rps: Some(rps_i),
                    cpu_utilisation: Some(cpu_i),
                    p99_ms: Some(p99),
                });
            } else {
                samples.push(InstanceSample::starting());
            }
        }
        let current = instances.len() as u32;
        let input = ScalingInput {
            current,
            ready,
            instances: samples,
            aggregate: AggregateSample {
                rps: Some(a),
                in_flight: Some(in_flight_i * f64::from(ready)),
                p99_ms: Some(p99),
            },
            startup_s: measured_startup,
        };
        inst_s += u64::from(current);
        let decision = policy.decide(Duration::from_secs(t), &input);
        panic_s += u64::from(decision.panic);
        let desired = decision.desired.clamp(cfg.min_instances, cfg.max_instances);
        if desired > current {
            ups += 1;
            for _ in current..desired {
                let (total, took) = model.launch_time(&mut launch_rng);
                instances.push((t + 1 + total, Some(took)));
            }
        } else if desired < current {
            downs += 1;
            // Starting instances first (latest launch first), then ready ones.
            instances.sort_unstable();
            instances.truncate(desired as usize);
        }
        peak = peak.max(desired);
        timeline.push(Tick {
            t,
            arrivals_rps: a,
            demand,
            ready,
            instances: current,
            desired,
            backlog,
            p99_ms: p99,
            slo_violated: violated,
            panic: decision.panic,
        });
    }
    let demand: Vec<u32> = timeline.iter().map(|k| k.demand).collect();
    let supply: Vec<u32> = timeline.iter().map(|k| k.ready).collect();
    let counts: Vec<u32> = timeline.iter().map(|k| k.instances).collect();
    let e: Elasticity = elasticity(&demand, &supply);
    let report = SimReport {
        policy: policy.name().to_string(),
        seed,
        duration_s: trace.rps.len() as u64,
        slo_violation_s: violation,
        instance_seconds: inst_s,
        instability_pct: e.instability_pct,
        accuracy_under_pct: e.accuracy_under_pct,
        accuracy_over_pct: e.accuracy_over_pct,
        timeshare_under_pct: e.timeshare_under_pct,
        timeshare_over_pct: e.timeshare_over_pct,
        jitter_per_min: e.jitter_per_min,
        supply_adaptations: e.supply_adaptations,
        demand_adaptations: e.demand_adaptations,
        flaps: flaps(&counts, model.flap_window_s),
        scale_ups: ups,
        scale_downs: downs,
        peak_instances: peak,
        dropped_requests: dropped.round() as u64,
        arrived_requests: arrived.round() as u64,
        max_p99_ms: max_p99,
        panic_s,
        model: *model,
    };
    Ok(SimRun { report, timeline })
}

/// The policy configs behind `--policy hpa|kpa|default|step|predictive`: the same target
/// (in-flight per instance) and min/max for all, each policy with its own defaults.
pub fn named_policy(name: &str) -> Option<Config> {
    use crate::config::PolicyKind;
    let base = Config {
        min_instances: 1,
        max_instances: 100,
        target_in_flight: Some(6.0),
        ..Config::default()
    };
    Some(match name {
        "default" => Config {
            policy: PolicyKind::Default,
            ..base
        },
        "hpa" => Config {
            policy: PolicyKind::Hpa,
            ..base
        },
        "kpa" => Config {
            policy: PolicyKind::Kpa,
            ..base
        },
        "step" => Config {
            policy: PolicyKind::Step,
            ..base
        },
        _ => return None,
    })
}

/// Names accepted by [`named_policy`].
pub const POLICY_NAMES: [&str; 4] = ["default", "hpa", "kpa", "step"];

#[cfg(test)]
mod tests;
