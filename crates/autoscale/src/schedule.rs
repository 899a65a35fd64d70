//! Scheduled scaling: repeating time windows that raise the minimum instance count.
//!
//! Wraps any policy: inside a window the decision is at least the window's
//! `min_instances` (the largest of overlapping windows). `now` is interpreted as time since
//! the epoch of each window's period (the Unix epoch for wall-clock schedules; the
//! simulator's t = 0 for traces). Never lowers what the wrapped policy asks for.

use std::time::Duration;

use crate::config::{Config, ScheduleWindow};
use crate::{Policy, ScalingDecision, ScalingInput};

/// The scheduled minimum at `now`, if any window is active.
pub fn scheduled_min(windows: &[ScheduleWindow], now: Duration) -> Option<u32> {
    let t = now.as_secs();
    windows
        .iter()
        .filter(|w| {
            let phase = t % w.period_s;
            phase >= w.start_s && phase < w.end_s
        })
        .map(|w| w.min_instances)
        .max()
}

/// A policy with scheduled minimums on top.
pub struct Scheduled {
    inner: Box<dyn Policy>,
    windows: Vec<ScheduleWindow>,
    max: u32,
    name: String,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("name", &self.name)
            .field("windows", &self.windows)
            .finish()
    }
}

impl Scheduled {
    /// Wraps `inner` with `cfg.schedule.windows`.
    pub fn new(inner: Box<dyn Policy>, cfg: &Config) -> Self {
        let name = format!("{}+schedule", inner.name());
        Self {
            inner,
            windows: cfg.schedule.windows.clone(),
            max: cfg.max_instances,
            name,
        }
    }
}

impl Policy for Scheduled {
    fn decide(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision {
        let mut d = self.inner.decide(now, input);
        if let Some(floor) = scheduled_min(&self.windows, now) {
            let floor = floor.min(self.max);
            if floor > d.desired {
                d.desired = floor;
                d.reason
                    .push_str(&format!("; raised to scheduled minimum {floor}"));
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
    use crate::metrics::InstanceSample;

    #[test]
    fn windows_repeat_every_period_and_the_largest_wins() {
        let w = [
            ScheduleWindow {
                period_s: 86_400,
                start_s: 8 * 3600,
                end_s: 18 * 3600,
                min_instances: 4,
            },
            ScheduleWindow {
                period_s: 86_400,
                start_s: 12 * 3600,
                end_s: 13 * 3600,
                min_instances: 9,
            },
        ];
        let at = |d: u64, h: u64| Duration::from_secs(d * 86_400 + h * 3600);
        assert_eq!(scheduled_min(&w, at(0, 7)), None);
        assert_eq!(scheduled_min(&w, at(0, 8)), Some(4));
        assert_eq!(scheduled_min(&w, at(3, 12)), Some(9));
        assert_eq!(scheduled_min(&w, at(3, 18)), None);
    }

    #[test]
    fn raises_the_wrapped_decision_inside_a_window_only() {
        let cfg = Config {
            policy: PolicyKind::Hpa,
            target_in_flight: Some(10.0),
            schedule: crate::config::ScheduleConfig {
                windows: vec![ScheduleWindow {
                    period_s: 100,
                    start_s: 50,
                    end_s: 60,
                    min_instances: 6,
                }],
            },
            ..Config::default()
        };
        let mut p = crate::build_policy(&cfg).unwrap();
        let input = ScalingInput {
            current: 2,
            ready: 2,
            instances: vec![InstanceSample::ready_with_in_flight(10.0); 2],
            ..ScalingInput::default()
        };
        assert_eq!(p.decide(Duration::from_secs(0), &input).desired, 2);
        let d = p.decide(Duration::from_secs(150), &input);
        assert_eq!(d.desired, 6);
        assert!(d.reason.contains("scheduled minimum"), "{}", d.reason);
    }
}
