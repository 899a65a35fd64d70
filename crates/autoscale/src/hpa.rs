//! A clone of Kubernetes' HorizontalPodAutoscaler, computed as
//! `pkg/controller/podautoscaler/replica_calculator.go` and `horizontal.go` do it
//! (autoscaling/v2 with `behavior`).
//!
//! Per metric: usage ratio = average usage / target over ready instances with a sample;
//! inside `1 ± tolerance` nothing changes; otherwise desired = ceil(ratio x ready).
//! Missing samples count as 100% of the target (100% CPU for CPU) on a scale-down and 0%
//! on a scale-up; starting (not ready) instances count as 0% on a scale-up; a move whose
//! direction those fill-ins would flip is dropped. Several metrics: the largest proposal
//! wins, and if some metric is unusable a scale-down is not taken. Then the `behavior`
//! (stabilisation windows, rate policies, min/max) limits it. Evaluates every
//! `sync_period_s`.
//!
//! Deliberate difference: with zero instances Kubernetes disables autoscaling; here the
//! policy asks for `min_instances` (the fleet starts from zero).

use std::time::Duration;

use crate::behavior::Behavior;
use crate::config::{Config, HpaConfig};
use crate::metrics::MetricKind;
use crate::throttle::{Evaluate, Throttled};
use crate::{ScalingDecision, ScalingInput};

/// The HPA clone: [`HpaCore`] evaluated every `sync_period_s`.
pub type Hpa = Throttled<HpaCore>;

/// The HPA clone's decision logic (the cadence is [`Throttled`]'s).
#[derive(Debug, Clone)]
pub struct HpaCore {
    cfg: HpaConfig,
    targets: Vec<(MetricKind, f64)>,
    min: u32,
    max: u32,
    behavior: Behavior,
}

/// One metric's proposal: a count and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// Proposed instance count.
    pub replicas: u32,
    /// Usage ratio (usage / target) as first computed.
    pub ratio: f64,
    /// e.g. "in_flight 16.0 vs target 8 per instance: ratio 2.00 x 2 ready".
    pub detail: String,
}

impl Hpa {
    /// An HPA for the targets, min/max and `hpa` settings in `cfg` (assumed validated).
    pub fn new(cfg: &Config) -> Self {
        Throttled::wrap(
            HpaCore {
                cfg: cfg.hpa.clone(),
                targets: cfg.targets(),
                min: cfg.min_instances,
                max: cfg.max_instances,
                behavior: Behavior::new(cfg.hpa.scale_up.clone(), cfg.hpa.scale_down.clone()),
            },
            Duration::from_secs(cfg.hpa.sync_period_s),
        )
    }
}

impl HpaCore {
    fn sync(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        let current = input.current;
        if current == 0 {
            return ScalingDecision::hold(
                self.min,
                format!("no instances: starting min_instances {}", self.min),
            );
        }
        if current > self.max {
            return ScalingDecision::hold(
                self.max,
                format!("{current} instances above max_instances {}", self.max),
            );
        }
        if current < self.min {
            return ScalingDecision::hold(
                self.min,
                format!("{current} instances below min_instances {}", self.min),
            );
        }
        let mut best: Option<Proposal> = None;
        let mut invalid = Vec::new();
        for &(metric, target) in &self.targets {
            match replicas_for_metric(metric, target, self.cfg.tolerance, input) {
                Ok(p) => {
                    if best.as_ref().is_none_or(|b| p.replicas > b.replicas) {
                        best = Some(p);
                    }
                }
                Err(why) => invalid.push(format!("{metric}: {why}")),
            }
        }
        let Some(best) = best else {
            return ScalingDecision::hold(
                current,
                format!(
                    "holding {current}: no usable metric ({})",
                    invalid.join("; ")
                ),
            );
        };
        if !invalid.is_empty() && best.replicas < current {
            return ScalingDecision::hold(
                current,
                format!(
                    "holding {current}: would scale down to {} but some metrics are unusable ({})",
                    best.replicas,
                    invalid.join("; ")
                ),
            );
        }
        let n = self
            .behavior
            .normalize(now, current, best.replicas, self.min, self.max);
        let mut reason = format!("{} -> {}", best.detail, best.replicas);
        if !n.note.is_empty() {
            reason.push_str("; ");
            reason.push_str(&n.note);
        }
        reason.push_str(&format!("; desired {}", n.desired));
        ScalingDecision {
            desired: n.desired,
            recommended: best.replicas,
            reason,
            panic: false,
            evaluated: true,
        }
    }
}

impl Evaluate for HpaCore {
    fn evaluate(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        let d = self.sync(now, input);
        if d.desired != input.current {
            self.behavior.record_scale(now, input.current, d.desired);
        }
        d
    }

    fn name(&self) -> &str {
        "hpa"
    }
}

/// The count one metric proposes, as the HPA's replica calculator computes it.
///
/// Per-instance samples use the Pods/Resource metric path; without them the balancer
/// aggregate is used: in-flight and RPS as an External `AverageValue` metric
/// (`GetExternalPerPodMetricReplicas`), p99 as an Object `Value` metric
/// (`GetObjectMetricReplicas`). p99 prefers the balancer's fleet-wide value.
pub fn replicas_for_metric(
    metric: MetricKind,
    target: f64,
    tolerance: f64,
    input: &ScalingInput,
) -> Result<Proposal, String> {
    if metric == MetricKind::P99Ms
        && let Some(p99) = metric.of_aggregate(&input.aggregate)
    {
        return object_value(metric, p99, target, tolerance, input);
    }
    let any_instance = input
        .instances
        .iter()
        .any(|s| metric.of_instance(s).is_some());
    if any_instance {
        return pods_metric(metric, target, tolerance, input);
    }
    match (metric, metric.of_aggregate(&input.aggregate)) {
        (MetricKind::InFlight | MetricKind::Rps, Some(total)) => {
            external_per_instance(metric, total, target, tolerance, input.current)
        }
        _ => Err("no sample from the balancer or any instance".to_string()),
    }
}

/// `calcPlainMetricReplicas` / `GetResourceReplicas`.
fn pods_metric(
    metric: MetricKind,
    target: f64,
    tolerance: f64,
    input: &ScalingInput,
) -> Result<Proposal, String> {
    let current = input.current;
    let mut values: Vec<f64> = Vec::new();
    let mut missing = 0usize;
    let mut unready = 0usize;
    for s in &input.instances {
        if !s.ready {
            unready += 1;
            continue;
        }
        match metric.of_instance(s) {
            Some(v) => values.push(v),
            None => missing += 1,
        }
    }
    let ready_count = values.len();
    if values.is_empty() {
        return Err("no sample from any ready instance".to_string());
    }
    let ratio_of = |vals: &[f64]| vals.iter().sum::<f64>() / vals.len() as f64 / target;
    let usage = values.iter().sum::<f64>() / values.len() as f64;
    let ratio = ratio_of(&values);
    let detail = |r: f64, n: usize| {
        format!("{metric} {usage:.2} vs target {target} per instance: ratio {r:.2} x {n} instances")
    };
    let rebalance_unready = unready > 0 && ratio > 1.0;
    if !rebalance_unready && missing == 0 {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(Proposal {
                replicas: current,
                ratio,
                detail: format!(
                    "{} within tolerance {tolerance}",
                    detail(ratio, ready_count)
                ),
            });
        }
        return Ok(Proposal {
            replicas: (ratio * ready_count as f64).ceil() as u32,
            ratio,
            detail: detail(ratio, ready_count),
        });
    }
    if missing > 0 {
        // Scale-down: missing count as 100% of target (100% of the request for CPU).
        // Scale-up: as 0%.
        let fill = if ratio < 1.0 {
            if metric == MetricKind::Cpu {
                100.0
            } else {
                target
            }
        } else {
            0.0
        };
        values.extend(std::iter::repeat_n(fill, missing));
    }
    if rebalance_unready {
        values.extend(std::iter::repeat_n(0.0, unready));
    }
    let new_ratio = ratio_of(&values);
    let counted = values.len();
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(Proposal {
            replicas: current,
            ratio,
            detail: format!(
                "{} ({missing} missing, {unready} not ready): ratio becomes {new_ratio:.2}, no change",
                detail(ratio, ready_count)
            ),
        });
    }
    let replicas = (new_ratio * counted as f64).ceil() as u32;
    if metric == MetricKind::Cpu
        && ((new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current))
    {
        return Ok(Proposal {
            replicas: current,
            ratio,
            detail: format!(
                "{} ({missing} missing, {unready} not ready): direction would flip, no change",
                detail(ratio, ready_count)
            ),
        });
    }
    Ok(Proposal {
        replicas,
        ratio,
        detail: format!(
            "{} ({missing} missing, {unready} not ready counted conservatively): ratio {new_ratio:.2} x {counted}",
            detail(ratio, ready_count)
        ),
    })
}

/// `GetObjectMetricReplicas` / `getUsageRatioReplicaCount`: a fleet-wide value against a
/// fleet-wide target, scaled by the ready count.
fn object_value(
    metric: MetricKind,
    value: f64,
    target: f64,
    tolerance: f64,
    input: &ScalingInput,
) -> Result<Proposal, String> {
    let ratio = value / target;
    let detail = format!(
        "{metric} {value:.1} vs target {target}: ratio {ratio:.2} x {} ready",
        input.ready
    );
    if input.current == 0 {
        return Ok(Proposal {
            replicas: ratio.ceil() as u32,
            ratio,
            detail,
        });
    }
    if (1.0 - ratio).abs() <= tolerance {
        return Ok(Proposal {
            replicas: input.current,
            ratio,
            detail: format!("{detail} within tolerance {tolerance}"),
        });
    }
    Ok(Proposal {
        replicas: (ratio * f64::from(input.ready)).ceil() as u32,
        ratio,
        detail,
    })
}

/// `GetExternalPerPodMetricReplicas`: a fleet total against a per-instance target.
fn external_per_instance(
    metric: MetricKind,
    total: f64,
    target: f64,
    tolerance: f64,
    current: u32,
) -> Result<Proposal, String> {
    let ratio = total / (target * f64::from(current.max(1)));
    let detail = format!(
        "{metric} total {total:.1} vs target {target} per instance over {current}: ratio {ratio:.2}"
    );
    if (1.0 - ratio).abs() > tolerance {
        Ok(Proposal {
            replicas: (total / target).ceil() as u32,
            ratio,
            detail,
        })
    } else {
        Ok(Proposal {
            replicas: current,
            ratio,
            detail: format!("{detail} within tolerance {tolerance}"),
        })
    }
}

#[cfg(test)]
mod tests;
