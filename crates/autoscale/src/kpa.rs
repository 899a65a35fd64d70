//! A clone of Knative's KPA (`knative/serving pkg/autoscaler/scaling/autoscaler.go`).
//!
//! Samples the fleet's total concurrency (or RPS) into 1 s buckets; every `tick_s` (2 s)
//! it averages the stable window (60 s) and the panic window (10% of it, 6 s):
//! desired stable = ceil(stable avg / target), desired panic = ceil(panic avg / target),
//! both clamped to [floor(ready / max scale-down rate), ceil(max scale-up rate x ready)],
//! where target = `target_in_flight` (or `target_rps`) x target utilisation (0.7).
//! Panic starts when desired panic / ready >= 2; while panicking the count only rises
//! (the maximum seen is held); panic ends after a full stable window below the threshold.
//! A new autoscaler seeing more than one ready instance starts in panic mode, as
//! Knative's does, so it never scales down before it has a window of data.
//!
//! min/max are applied last (in Knative that is the revision's min-scale/max-scale).

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{Config, KpaConfig};
use crate::metrics::{MetricKind, fleet_total};
use crate::throttle::{Evaluate, Throttled};
use crate::{ScalingDecision, ScalingInput};

/// Per-second buckets over a sliding window, averaged as Knative's
/// `TimedFloat64Buckets.WindowAverage` does: seconds with no sample after the first one
/// count as zero, and the divisor is the number of seconds since the first sample, capped
/// at the window.
#[derive(Debug, Clone, Default)]
pub struct SecondBuckets {
    /// (second, sum of samples, number of samples), oldest first.
    buckets: VecDeque<(u64, f64, u32)>,
    first_second: Option<u64>,
    /// Bound on kept seconds.
    keep_s: u64,
}

impl SecondBuckets {
    /// Buckets keeping at most `keep_s` seconds.
    pub fn new(keep_s: u64) -> Self {
        Self {
            buckets: VecDeque::new(),
            first_second: None,
            keep_s: keep_s.max(1),
        }
    }

    /// Records `value` at `now` (several samples in one second are averaged).
    pub fn record(&mut self, now: Duration, value: f64) {
        let sec = now.as_secs();
        self.first_second.get_or_insert(sec);
        match self.buckets.back_mut() {
            Some((s, sum, n)) if *s == sec => {
                *sum += value;
                *n += 1;
            }
            _ => self.buckets.push_back((sec, value, 1)),
        }
        while let Some(&(s, _, _)) = self.buckets.front() {
            if sec.saturating_sub(s) >= self.keep_s {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// The average over the `window_s` seconds ending at `now` (inclusive), or `None`
    /// before the first sample.
    pub fn window_average(&self, now: Duration, window_s: u64) -> Option<f64> {
        let first = self.first_second?;
        let sec = now.as_secs();
        let window_s = window_s.max(1);
        let total: f64 = self
            .buckets
            .iter()
            .filter(|(s, _, _)| *s <= sec && sec - *s < window_s)
            .map(|(_, sum, n)| sum / f64::from(*n))
            .sum();
        let seconds = (sec.saturating_sub(first) + 1).min(window_s);
        Some(total / seconds as f64)
    }

    /// Coefficient of variation (standard deviation / mean) of the per-second values
    /// over the `window_s` seconds ending at `now`, counting only seconds with a sample;
    /// `None` with fewer than two such seconds or a mean of zero.
    pub fn window_cv(&self, now: Duration, window_s: u64) -> Option<f64> {
        let sec = now.as_secs();
        let window_s = window_s.max(1);
        let (mut n, mut sum, mut sum_sq) = (0.0f64, 0.0f64, 0.0f64);
        for (s, total, k) in &self.buckets {
            if *s <= sec && sec - *s < window_s {
                let v = total / f64::from(*k);
                n += 1.0;
                sum += v;
                sum_sq += v * v;
            }
        }
        if n < 2.0 {
            return None;
        }
        let mean = sum / n;
        if mean <= 0.0 {
            return None;
        }
        let var = (sum_sq / n - mean * mean).max(0.0);
        Some(var.sqrt() / mean)
    }
}

/// The KPA clone: [`KpaCore`] evaluated every `tick_s`.
pub type Kpa = Throttled<KpaCore>;

/// The KPA clone's decision logic (the cadence is [`Throttled`]'s).
#[derive(Debug, Clone)]
pub struct KpaCore {
    cfg: KpaConfig,
    metric: MetricKind,
    /// target x target utilisation.
    target: f64,
    min: u32,
    max: u32,
    buckets: SecondBuckets,
    panic_since: Option<Duration>,
    max_panic: u32,
    started: bool,
    /// (time, desired) over the scale-down delay window.
    delay: VecDeque<(Duration, u32)>,
}

impl Kpa {
    /// A KPA on `target_in_flight` (else `target_rps`) from `cfg` (assumed validated).
    pub fn new(cfg: &Config) -> Self {
        let (metric, target) = match (cfg.target_in_flight, cfg.target_rps) {
            (Some(t), _) => (MetricKind::InFlight, t),
            (None, Some(t)) => (MetricKind::Rps, t),
            // validate() rejects a KPA config without either; fall back to in-flight 1.
            (None, None) => (MetricKind::InFlight, 1.0),
        };
        let core = KpaCore {
            target: target * cfg.kpa.target_utilisation,
            cfg: cfg.kpa.clone(),
            metric,
            min: cfg.min_instances,
            max: cfg.max_instances,
            buckets: SecondBuckets::new(cfg.kpa.stable_window_s),
            panic_since: None,
            max_panic: 0,
            started: false,
            delay: VecDeque::new(),
        };
        Throttled::wrap(core, Duration::from_secs(cfg.kpa.tick_s))
    }
}

impl KpaCore {
    fn panic_window_s(&self) -> u64 {
        ((self.cfg.stable_window_s as f64 * self.cfg.panic_window_pct / 100.0).round() as u64)
            .max(1)
    }

    fn scale(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        let stable_window = Duration::from_secs(self.cfg.stable_window_s);
        if !self.started {
            self.started = true;
            if input.ready > 1 {
                self.panic_since = Some(now);
                self.max_panic = input.ready;
            }
        }
        let (Some(stable), Some(panic_avg)) = (
            self.buckets.window_average(now, self.cfg.stable_window_s),
            self.buckets.window_average(now, self.panic_window_s()),
        ) else {
            return ScalingDecision::hold(
                input.current.clamp(self.min, self.max),
                format!("holding {}: no {} data yet", input.current, self.metric),
            );
        };
        let ready = f64::from(input.ready.max(1));
        let max_up = (self.cfg.max_scale_up_rate * ready).ceil();
        let max_down = (ready / self.cfg.max_scale_down_rate).floor();
        let dspc = (stable / self.target).ceil();
        let dppc = (panic_avg / self.target).ceil();
        let desired_stable = dspc.max(max_down).min(max_up) as u32;
        let desired_panic = dppc.max(max_down).min(max_up) as u32;
        let over = dppc / ready >= self.cfg.panic_threshold_pct / 100.0;
        let mut note = String::new();
        match self.panic_since {
            None if over => {
                self.panic_since = Some(now);
                note = "panic started".into();
            }
            Some(_) if over => self.panic_since = Some(now),
            Some(since) if since + stable_window < now => {
                self.panic_since = None;
                self.max_panic = 0;
                note = "panic ended".into();
            }
            _ => {}
        }
        let mut desired = desired_stable;
        if self.panic_since.is_some() {
            desired = desired.max(desired_panic);
            if desired > self.max_panic {
                self.max_panic = desired;
            } else if desired < self.max_panic {
                note = format!("panicking: holding {} (no scale-down)", self.max_panic);
            }
            desired = self.max_panic;
        }
        if self.cfg.scale_down_delay_s > 0 {
            let window = Duration::from_secs(self.cfg.scale_down_delay_s);
            self.delay.push_back((now, desired));
            while self
                .delay
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= window)
            {
                self.delay.pop_front();
            }
            let held = self.delay.iter().map(|(_, d)| *d).max().unwrap_or(desired);
            if held != desired {
                note = format!(
                    "scale-down delayed {} s: holding {held}",
                    self.cfg.scale_down_delay_s
                );
                desired = held;
            }
        }
        let recommended = desired;
        let clamped = desired.clamp(self.min, self.max);
        let mut reason = format!(
            "{} stable {:.1} / panic {:.1} vs target {:.2} per instance: stable -> {desired_stable}, panic -> {desired_panic} over {} ready",
            self.metric, stable, panic_avg, self.target, input.ready
        );
        if !note.is_empty() {
            reason.push_str("; ");
            reason.push_str(&note);
        }
        if clamped != desired {
            reason.push_str(&format!("; clamped to [{}, {}]", self.min, self.max));
        }
        reason.push_str(&format!("; desired {clamped}"));
        ScalingDecision {
            desired: clamped,
            recommended,
            reason,
            panic: self.panic_since.is_some(),
            evaluated: true,
        }
    }
}

impl Evaluate for KpaCore {
    fn observe(&mut self, now: Duration, input: &ScalingInput) {
        if let Some(v) = fleet_total(self.metric, input) {
            self.buckets.record(now, v);
        }
    }

    fn evaluate(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        self.scale(now, input)
    }

    fn name(&self) -> &str {
        "kpa"
    }
}

#[cfg(test)]
mod tests;
