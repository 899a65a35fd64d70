//! HPA `behavior`: stabilisation windows and rate policies, as Kubernetes computes them in
//! `horizontal.go` (`stabilizeRecommendationWithBehaviors`,
//! `convertDesiredReplicasWithBehaviorRate`, `calculateScaleUpLimitWithScalingRules`,
//! `calculateScaleDownLimitWithBehaviors`).
//!
//! Shared by the HPA clone and our default policy. Pure: the caller passes `now`; this
//! module never computes a recommendation, it only limits one.

use std::time::Duration;

use crate::config::{RatePolicyKind, ScalingRules, SelectPolicy};

/// Stabilisation and rate-limit state for one scaled target.
#[derive(Debug, Clone)]
pub struct Behavior {
    up: ScalingRules,
    down: ScalingRules,
    /// Every raw recommendation with its time (bounded: old ones are overwritten).
    recommendations: Vec<(Duration, u32)>,
    /// Scale-up events: (time, instances added).
    up_events: Vec<(Duration, u32)>,
    /// Scale-down events: (time, instances removed).
    down_events: Vec<(Duration, u32)>,
}

/// The outcome of [`Behavior::normalize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The count after stabilisation, rate limits and min/max.
    pub desired: u32,
    /// The count after stabilisation only.
    pub stabilized: u32,
    /// Why it is what it is, e.g. "scale-down stabilised over 300 s window (max 7)".
    pub note: String,
}

/// Bound on kept recommendations and events (at most one per second over an hour window).
const MAX_HISTORY: usize = 4096;

impl Behavior {
    /// A fresh state for `up` and `down` rules.
    pub fn new(up: ScalingRules, down: ScalingRules) -> Self {
        Self {
            up,
            down,
            recommendations: Vec::new(),
            up_events: Vec::new(),
            down_events: Vec::new(),
        }
    }

    /// Stabilises `raw` against the windows, then limits it by the rate policies and
    /// `min..=max`, exactly in the HPA's order. Records `raw` as a recommendation.
    pub fn normalize(
        &mut self,
        now: Duration,
        current: u32,
        raw: u32,
        min: u32,
        max: u32,
    ) -> Normalized {
        // maybeInitScaleDownStabilizationWindow: the first call seeds the window with the
        // current count, so a fresh controller does not scale down at once.
        if self.recommendations.is_empty() && self.down.stabilization_window_s > 0 {
            self.recommendations.push((now, current));
        }
        let (stabilized, mut note) = self.stabilize(now, current, raw);
        let (desired, rate_note) = self.rate_limit(now, current, stabilized, min, max);
        if !rate_note.is_empty() {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&rate_note);
        }
        Normalized {
            desired,
            stabilized,
            note,
        }
    }

    /// Records that the count moved from `from` to `to` at `now` (call when the decision
    /// changed the count), for the rate policies' "added/removed in period".
    pub fn record_scale(&mut self, now: Duration, from: u32, to: u32) {
        let longest_up = self
            .up
            .policies
            .iter()
            .map(|p| p.period_s)
            .max()
            .unwrap_or(0);
        let longest_down = self
            .down
            .policies
            .iter()
            .map(|p| p.period_s)
            .max()
            .unwrap_or(0);
        let keep = |events: &mut Vec<(Duration, u32)>, period_s: u64| {
            events.retain(|(t, _)| now.saturating_sub(*t) <= Duration::from_secs(period_s));
            if events.len() >= MAX_HISTORY {
                events.remove(0);
            }
        };
        if to > from {
            keep(&mut self.up_events, longest_up);
            self.up_events.push((now, to - from));
        } else if to < from {
            keep(&mut self.down_events, longest_down);
            self.down_events.push((now, from - to));
        }
    }

    fn stabilize(&mut self, now: Duration, current: u32, raw: u32) -> (u32, String) {
        let up_window = Duration::from_secs(self.up.stabilization_window_s);
        let down_window = Duration::from_secs(self.down.stabilization_window_s);
        let up_cutoff = now.checked_sub(up_window);
        let down_cutoff = now.checked_sub(down_window);
        // `timestamp.After(cutoff)`; a cutoff before the epoch admits everything.
        let after = |t: Duration, cutoff: Option<Duration>| cutoff.is_none_or(|c| t > c);
        let mut up_rec = raw;
        let mut down_rec = raw;
        let mut old_index = None;
        for (i, &(t, r)) in self.recommendations.iter().enumerate() {
            if after(t, up_cutoff) {
                up_rec = up_rec.min(r);
            }
            if after(t, down_cutoff) {
                down_rec = down_rec.max(r);
            }
            let before = |c: Option<Duration>| c.is_some_and(|c| t < c);
            if before(up_cutoff) && before(down_cutoff) {
                old_index = Some(i);
            }
        }
        let mut rec = current;
        let mut note = String::new();
        if rec < up_rec {
            rec = up_rec;
        }
        if rec > down_rec {
            rec = down_rec;
        }
        if raw > current && rec < raw {
            note = format!(
                "scale-up stabilised over {} s window (min {})",
                self.up.stabilization_window_s, up_rec
            );
        } else if raw < current && rec > raw {
            note = format!(
                "scale-down stabilised over {} s window (max {})",
                self.down.stabilization_window_s, down_rec
            );
        }
        match old_index {
            Some(i) => self.recommendations[i] = (now, raw),
            None => {
                if self.recommendations.len() >= MAX_HISTORY {
                    self.recommendations.remove(0);
                }
                self.recommendations.push((now, raw));
            }
        }
        (rec, note)
    }

    fn change_in_period(events: &[(Duration, u32)], now: Duration, period_s: u64) -> u32 {
        let cutoff = now.checked_sub(Duration::from_secs(period_s));
        events
            .iter()
            .filter(|(t, _)| cutoff.is_none_or(|c| *t > c))
            .map(|(_, n)| *n)
            .sum()
    }

    fn period_start(&self, now: Duration, current: u32, period_s: u64) -> i64 {
        i64::from(current) - i64::from(Self::change_in_period(&self.up_events, now, period_s))
            + i64::from(Self::change_in_period(&self.down_events, now, period_s))
    }

    /// `calculateScaleUpLimitWithScalingRules`.
    pub fn scale_up_limit(&self, now: Duration, current: u32) -> u32 {
        let rules = &self.up;
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::MAX, i64::min),
            SelectPolicy::Max => (i64::MIN, i64::max),
        };
        for p in &rules.policies {
            let start = self.period_start(now, current, p.period_s);
            let proposed = match p.kind {
                RatePolicyKind::Pods => start + i64::from(p.value),
                RatePolicyKind::Percent => {
                    (start as f64 * (1.0 + f64::from(p.value) / 100.0)).ceil() as i64
                }
            };
            result = pick(result, proposed);
        }
        result.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// `calculateScaleDownLimitWithBehaviors`.
    pub fn scale_down_limit(&self, now: Duration, current: u32) -> u32 {
        let rules = &self.down;
        let (mut result, pick): (i64, fn(i64, i64) -> i64) = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => (i64::MIN, i64::max),
            SelectPolicy::Max => (i64::MAX, i64::min),
        };
        for p in &rules.policies {
            let start = self.period_start(now, current, p.period_s);
            let proposed = match p.kind {
                RatePolicyKind::Pods => start - i64::from(p.value),
                // Go's int32(float64) conversion truncates toward zero: floor for >= 0.
                RatePolicyKind::Percent => {
                    (start as f64 * (1.0 - f64::from(p.value) / 100.0)).trunc() as i64
                }
            };
            result = pick(result, proposed);
        }
        result.clamp(0, i64::from(u32::MAX)) as u32
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limit(
        &self,
        now: Duration,
        current: u32,
        desired: u32,
        min: u32,
        max: u32,
    ) -> (u32, String) {
        if desired > current {
            let limit = self.scale_up_limit(now, current).max(current);
            let (allowed, why) = if max > limit {
                (
                    limit,
                    format!(
                        "scale-up limited by rate policy ({} per period, select {:?})",
                        describe(&self.up),
                        self.up.select_policy
                    ),
                )
            } else {
                (max, format!("capped at max_instances {max}"))
            };
            if desired > allowed {
                return (allowed, why);
            }
        } else if desired < current {
            let limit = self.scale_down_limit(now, current).min(current);
            let (allowed, why) = if min < limit {
                (
                    limit,
                    format!(
                        "scale-down limited by rate policy ({} per period, select {:?})",
                        describe(&self.down),
                        self.down.select_policy
                    ),
                )
            } else {
                (min, format!("floored at min_instances {min}"))
            };
            if desired < allowed {
                return (allowed, why);
            }
        }
        (desired, String::new())
    }
}

fn describe(rules: &ScalingRules) -> String {
    rules
        .policies
        .iter()
        .map(|p| match p.kind {
            RatePolicyKind::Pods => format!("{} inst/{} s", p.value, p.period_s),
            RatePolicyKind::Percent => format!("{}%/{} s", p.value, p.period_s),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
