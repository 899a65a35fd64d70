//! Predictive pre-scaling: forecast the fleet's demand with additive Holt-Winters and
//! launch instances early enough to be ready when the forecast load arrives.
//!
//! Wraps a reactive policy, which stays the floor: the decision is
//! max(reactive, ceil(forecast demand / target)), clamped to max_instances, so a wrong
//! forecast can only add instances, never remove them (scale-out only). The lead is the
//! measured start-up time (`ScalingInput::startup_s`, or the configured default until one
//! is measured) plus `extra_lead_s`; the forecast floor is the highest forecast over the
//! buckets between now and now + lead. Samples are averaged into `bucket_s` buckets.

use std::time::Duration;

use crate::config::{Config, PredictiveConfig};
use crate::forecast::HoltWinters;
use crate::metrics::{MetricKind, fleet_total};
use crate::{Policy, ScalingDecision, ScalingInput};

/// A reactive policy with a forecast floor.
pub struct Predictive {
    inner: Box<dyn Policy>,
    cfg: PredictiveConfig,
    metric: MetricKind,
    target: f64,
    max: u32,
    model: HoltWinters,
    /// The bucket being filled: (bucket index, sum, samples).
    bucket: Option<(u64, f64, u32)>,
    name: String,
}

impl std::fmt::Debug for Predictive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictive")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Predictive {
    /// Wraps `inner` with the forecast floor configured in `cfg.predictive`.
    pub fn new(inner: Box<dyn Policy>, cfg: &Config) -> Self {
        let p = cfg.predictive.clone();
        let period = (p.season_period_s / p.bucket_s) as usize;
        let name = format!("{}+predictive", inner.name());
        Self {
            inner,
            metric: p.metric,
            target: cfg.target(p.metric).unwrap_or(1.0),
            max: cfg.max_instances,
            model: HoltWinters::new(p.alpha, p.beta, p.gamma, period),
            cfg: p,
            bucket: None,
            name,
        }
    }

    fn record(&mut self, now: Duration, value: f64) {
        let idx = now.as_secs() / self.cfg.bucket_s;
        match &mut self.bucket {
            Some((i, sum, n)) if *i == idx => {
                *sum += value;
                *n += 1;
            }
            _ => {
                if let Some((i, sum, n)) = self.bucket.take() {
                    self.model.observe(sum / f64::from(n));
                    // Buckets with no sample at all (a gap longer than a bucket) count as
                    // zero demand, bounded to one season so a long gap cannot loop long.
                    let gaps = idx
                        .saturating_sub(i + 1)
                        .min(self.cfg.season_period_s / self.cfg.bucket_s);
                    for _ in 0..gaps {
                        self.model.observe(0.0);
                    }
                }
                self.bucket = Some((idx, value, 1));
            }
        }
    }

    /// The forecast floor (instances) at `now` with start-up time `startup_s`, and the
    /// forecast demand behind it.
    pub fn forecast_floor(&self, now: Duration, startup_s: f64) -> Option<(u32, f64)> {
        if self.model.seasons() < u64::from(self.cfg.min_seasons) {
            return None;
        }
        let lead_s = startup_s + self.cfg.extra_lead_s;
        let b = self.cfg.bucket_s as f64;
        // The model's last observation is the bucket before the one being filled.
        let filling = now.as_secs() / self.cfg.bucket_s;
        let last_done = filling.checked_sub(1)?;
        let now_b = now.as_secs_f64() / b;
        let from = (filling - last_done).max(1);
        let to = ((now_b + lead_s / b).floor() as u64)
            .saturating_sub(last_done)
            .max(from);
        let peak = (from..=to)
            .filter_map(|h| self.model.forecast(h))
            .fold(f64::NEG_INFINITY, f64::max);
        if !peak.is_finite() {
            return None;
        }
        let demand = peak.max(0.0);
        Some(((demand / self.target).ceil() as u32, demand))
    }
}

impl Policy for Predictive {
    fn decide(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        if let Some(v) = fleet_total(self.metric, input) {
            self.record(now, v);
        }
        let mut d = self.inner.decide(now, input);
        let startup_s = input
            .startup_s
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(self.cfg.default_startup_s);
        if let Some((floor, demand)) = self.forecast_floor(now, startup_s) {
            let floor = floor.min(self.max);
            if floor > d.desired {
                d.desired = floor;
                d.reason.push_str(&format!(
                    "; raised to forecast {floor} ({} {demand:.1} expected within {:.0} s)",
                    self.metric,
                    startup_s + self.cfg.extra_lead_s
                ));
            }
        }
        d
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyKind;
    use crate::metrics::AggregateSample;

    fn cfg() -> Config {
        let mut c = Config {
            policy: PolicyKind::Hpa,
            target_rps: Some(10.0),
            target_in_flight: None,
            max_instances: 100,
            ..Config::default()
        };
        c.predictive = PredictiveConfig {
            enabled: true,
            metric: MetricKind::Rps,
            season_period_s: 600,
            bucket_s: 10,
            default_startup_s: 30.0,
            extra_lead_s: 0.0,
            ..PredictiveConfig::default()
        };
        c
    }

    /// A square wave: 20 rps, then 200 rps from 300 s to 400 s of every 600 s.
    fn demand(t: u64) -> f64 {
        if (300..400).contains(&(t % 600)) {
            200.0
        } else {
            20.0
        }
    }

    fn input(rps: f64, n: u32) -> ScalingInput {
        ScalingInput {
            current: n,
            ready: n,
            aggregate: AggregateSample {
                rps: Some(rps),
                ..AggregateSample::default()
            },
            ..ScalingInput::default()
        }
    }

    #[test]
    fn pre_scales_ahead_of_a_learned_peak_and_never_lowers() {
        let mut p = crate::build_policy(&cfg()).unwrap();
        let mut n = 2;
        let mut raised_before_peak = false;
        for t in 0..(3 * 600) {
            let d = p.decide(Duration::from_secs(t), &input(demand(t), n));
            n = d.desired;
            // In the third season, 30 s before the peak, the forecast should already ask
            // for the peak's 20 instances while the demand is still 20 rps.
            if (1200 + 275..1200 + 300).contains(&t) && d.desired >= 18 {
                raised_before_peak = true;
                assert!(d.reason.contains("forecast"), "{}", d.reason);
            }
        }
        assert!(raised_before_peak, "no pre-scaling before the learned peak");
    }

    #[test]
    fn without_history_it_is_the_reactive_policy() {
        let mut p = crate::build_policy(&cfg()).unwrap();
        let mut h = crate::build_policy(&Config {
            predictive: PredictiveConfig::default(),
            ..cfg()
        })
        .unwrap();
        for t in 0..300 {
            let i = input(demand(t) * 0.5, 3);
            assert_eq!(
                p.decide(Duration::from_secs(t), &i).desired,
                h.decide(Duration::from_secs(t), &i).desired
            );
        }
    }
}
