//! Step scaling with a cooldown (in the style of AWS step scaling policies).
//!
//! Every `evaluate_every_s` the fleet's per-instance value of the chosen metric is compared
//! with its target; the breach, in percent of the target, selects the step whose
//! `[lower_pct, upper_pct)` holds it, and the step adds or removes a fixed number of
//! instances. After any change no further change happens for `cooldown_s`. This module
//! only decides; it keeps no clock of its own.

use std::time::Duration;

use crate::config::{Config, StepConfig};
use crate::metrics::{MetricKind, fleet_total};
use crate::throttle::{Evaluate, Throttled};
use crate::{ScalingDecision, ScalingInput};

/// The step policy: [`StepCore`] evaluated every `evaluate_every_s`.
pub type StepScaling = Throttled<StepCore>;

/// The step policy's decision logic (the cadence is [`Throttled`]'s).
#[derive(Debug, Clone)]
pub struct StepCore {
    cfg: StepConfig,
    target: f64,
    min: u32,
    max: u32,
    last_change: Option<Duration>,
}

impl StepScaling {
    /// A step policy from `cfg.step` and the target of `cfg.step.metric`.
    pub fn new(cfg: &Config) -> Self {
        Throttled::wrap(
            StepCore {
                target: cfg.target(cfg.step.metric).unwrap_or(1.0),
                cfg: cfg.step.clone(),
                min: cfg.min_instances,
                max: cfg.max_instances,
                last_change: None,
            },
            Duration::from_secs(cfg.step.evaluate_every_s),
        )
    }
}

impl StepCore {
    /// The per-instance value (fleet-wide for p99) of the step metric.
    fn value(&self, input: &ScalingInput) -> Option<f64> {
        let metric = self.cfg.metric;
        match metric {
            MetricKind::P99Ms => metric.of_aggregate(&input.aggregate).or_else(|| {
                let v: Vec<f64> = input
                    .instances
                    .iter()
                    .filter_map(|s| metric.of_instance(s))
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            }),
            MetricKind::Cpu => {
                let v: Vec<f64> = input
                    .instances
                    .iter()
                    .filter(|s| s.ready)
                    .filter_map(|s| metric.of_instance(s))
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            }
            MetricKind::InFlight | MetricKind::Rps => {
                fleet_total(metric, input).map(|t| t / f64::from(input.ready.max(1)))
            }
        }
    }

    fn step(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        let current = input.current;
        if current < self.min || current > self.max {
            let to = current.clamp(self.min, self.max);
            return ScalingDecision::hold(
                to,
                format!("{current} instances outside [{}, {}]", self.min, self.max),
            );
        }
        if let Some(at) = self.last_change {
            let until = at + Duration::from_secs(self.cfg.cooldown_s);
            if now < until {
                return ScalingDecision::hold(
                    current,
                    format!("holding {current}: cooldown until {} s", until.as_secs()),
                );
            }
        }
        let metric = self.cfg.metric;
        let Some(value) = self.value(input) else {
            return ScalingDecision::hold(
                current,
                format!("holding {current}: no {metric} sample"),
            );
        };
        let breach_pct = (value / self.target - 1.0) * 100.0;
        let step = self.cfg.steps.iter().find(|r| {
            r.lower_pct.is_none_or(|lo| breach_pct >= lo)
                && r.upper_pct.is_none_or(|hi| breach_pct < hi)
        });
        let head = format!(
            "{metric} {value:.2} vs target {} ({breach_pct:+.0}%)",
            self.target
        );
        let Some(step) = step else {
            return ScalingDecision::hold(
                current,
                format!("{head}: no step applies, holding {current}"),
            );
        };
        let raw = (i64::from(current) + i64::from(step.adjust_instances)).max(0) as u32;
        let desired = raw.clamp(self.min, self.max);
        if desired != current {
            self.last_change = Some(now);
        }
        ScalingDecision {
            desired,
            recommended: raw,
            reason: format!(
                "{head}: step {:+} -> {desired}{}",
                step.adjust_instances,
                if desired != raw {
                    " (clamped to min/max)"
                } else {
                    ""
                }
            ),
            panic: false,
            evaluated: true,
        }
    }
}

impl Evaluate for StepCore {
    fn evaluate(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        self.step(now, input)
    }

    fn name(&self) -> &str {
        "step"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Policy;
    use crate::config::PolicyKind;
    use crate::metrics::InstanceSample;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn input(n: u32, in_flight_each: f64) -> ScalingInput {
        ScalingInput {
            current: n,
            ready: n,
            instances: vec![InstanceSample::ready_with_in_flight(in_flight_each); n as usize],
            ..ScalingInput::default()
        }
    }

    fn policy() -> StepScaling {
        StepScaling::new(&Config {
            policy: PolicyKind::Step,
            target_in_flight: Some(10.0),
            max_instances: 50,
            ..Config::default()
        })
    }

    #[test]
    fn breach_selects_the_step() {
        // +20% -> +1, +70% -> +2, +150% -> +4, -50% -> -1, +5% -> none.
        for (v, want) in [(12.0, 5), (17.0, 6), (25.0, 8), (5.0, 3), (10.5, 4)] {
            let mut p = policy();
            let d = p.decide(s(0), &input(4, v));
            assert_eq!(d.desired, want, "value {v}: {}", d.reason);
        }
    }

    #[test]
    fn cooldown_blocks_changes_until_it_ends() {
        let mut p = policy();
        assert_eq!(p.decide(s(0), &input(4, 25.0)).desired, 8);
        // Evaluated at 10, 20, ... but inside the 60 s cooldown: hold.
        for t in (10..60).step_by(10) {
            let d = p.decide(s(t), &input(8, 25.0));
            assert_eq!(d.desired, 8, "at {t}: {}", d.reason);
            assert!(d.reason.contains("cooldown"), "{}", d.reason);
        }
        assert_eq!(p.decide(s(60), &input(8, 25.0)).desired, 12);
    }

    #[test]
    fn respects_min_and_max() {
        let mut p = policy();
        assert_eq!(p.decide(s(0), &input(49, 100.0)).desired, 50);
        let mut p = policy();
        assert_eq!(p.decide(s(0), &input(1, 0.0)).desired, 1);
    }
}
