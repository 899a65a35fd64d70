//! The worker fleet's autoscaling policy, KEDA's model on a queue backlog. Pure: it takes
//! `now` and a backlog sample and returns the desired worker count with its reason.
//!
//! - **Target per worker.** `desired = ceil(backlog / target_jobs_per_worker)`, clamped
//!   to `min_workers..=max_workers` (KEDA's redis-streams `pendingEntriesCount`, HPA's
//!   `AverageValue`).
//! - **Oldest-job age.** With `max_oldest_age_ms`, a backlog whose oldest job is older
//!   than that *and still ageing* (its age rose since the last sample: the workers are
//!   not catching up) asks for one worker more than there are.
//! - **Activation and scale to zero.** The trigger is *active* while the backlog exceeds
//!   `activation_jobs` (or the age rule fires). With `min_workers = 0`: an inactive
//!   trigger keeps a fleet at zero, and takes a running fleet to zero once it has been
//!   inactive for `cooldown_ms` (KEDA's `cooldownPeriod`); an active one wakes a fleet at
//!   zero at once.
//! - **Stabilisation.** Scaling up is immediate (capped at `max_step_up` per decision);
//!   scaling down uses the highest recommendation of the last `scale_down_window_ms`
//!   (HPA's scale-down stabilisation), so a momentarily empty queue does not stop workers
//!   a refill needs again.
//! - **Missing data.** No sample (the queue did not answer): hold the current count.
//!
//! This module never reads the clock, the queue or the fleet.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The policy's settings (checked by `WorkersConfig::validate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogRules {
    /// Fewest workers (0 allows scale to zero).
    pub min_workers: u32,
    /// Most workers.
    pub max_workers: u32,
    /// Jobs of backlog one worker is sized for.
    pub target_jobs_per_worker: u64,
    /// At or below this backlog the trigger is inactive.
    pub activation_jobs: u64,
    /// Oldest-job age beyond which an ageing backlog adds a worker (0: off).
    pub max_oldest_age_ms: u64,
    /// Scale-down stabilisation window.
    pub scale_down_window: Duration,
    /// Inactive time before scaling to zero.
    pub cooldown: Duration,
    /// Most workers added per decision (0: no cap).
    pub max_step_up: u32,
}

/// One reading of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BacklogSample {
    /// Jobs not yet done (ready + delayed + in flight).
    pub depth: u64,
    /// Age of the oldest ready or in-flight job, ms.
    pub oldest_age_ms: Option<u64>,
}

/// A decision: the count to run and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogDecision {
    /// Workers wanted.
    pub desired: u32,
    /// Why, in words (for the status line).
    pub reason: String,
}

/// The policy with its memory (recommendations in the window, last activity, last age).
#[derive(Debug, Clone)]
pub struct BacklogPolicy {
    rules: BacklogRules,
    recent: VecDeque<(Instant, u32)>,
    last_active: Option<Instant>,
    last_age_ms: Option<u64>,
}

/// Recommendations kept at most (a window of 300 s at one sample per 100 ms).
const MAX_RECENT: usize = 3_000;

impl BacklogPolicy {
    /// A policy with `rules` and no history.
    pub fn new(rules: BacklogRules) -> Self {
        Self {
            rules,
            recent: VecDeque::new(),
            last_active: None,
            last_age_ms: None,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &BacklogRules {
        &self.rules
    }

    /// The desired worker count at `now`, with `current` workers running (not retiring)
    /// and the queue's `sample` (`None`: unreadable).
    pub fn decide(
        &mut self,
        now: Instant,
        current: u32,
        sample: Option<BacklogSample>,
    ) -> BacklogDecision {
        let r = self.rules;
        let Some(s) = sample else {
            return BacklogDecision {
                desired: current,
                reason: "backlog unavailable; holding".into(),
            };
        };
        let ageing = match (r.max_oldest_age_ms, s.oldest_age_ms) {
            (0, _) | (_, None) => false,
            (max, Some(age)) => age > max && self.last_age_ms.is_some_and(|prev| age > prev),
        };
        self.last_age_ms = s.oldest_age_ms;
        let active = s.depth > r.activation_jobs || ageing;
        if active {
            self.last_active = Some(now);
        }
        // Scale to zero (KEDA's activation phase), outside the stabilisation window.
        if r.min_workers == 0 && !active {
            let cooled = self
                .last_active
                .is_none_or(|t| now.saturating_duration_since(t) >= r.cooldown);
            if current == 0 {
                self.recent.clear();
                return decision(0, format!("backlog {} inactive; staying at zero", s.depth));
            }
            if cooled {
                self.recent.clear();
                return decision(
                    0,
                    format!(
                        "backlog {} inactive for {} s (cooldown); scale to zero",
                        s.depth,
                        r.cooldown.as_secs()
                    ),
                );
            }
        }
        let by_depth = s.depth.div_ceil(r.target_jobs_per_worker.max(1));
        let mut want = u32::try_from(by_depth).unwrap_or(u32::MAX);
        let mut why = format!(
            "backlog {} / {} per worker = {want}",
            s.depth, r.target_jobs_per_worker
        );
        if ageing && want <= current {
            want = current.saturating_add(1);
            why.push_str(&format!(
                "; oldest job {} ms and ageing (> {} ms): +1",
                s.oldest_age_ms.unwrap_or(0),
                r.max_oldest_age_ms
            ));
        }
        let floor = r.min_workers.max(1);
        if want < floor {
            want = floor;
            why.push_str(&format!(" (min {floor})"));
        }
        if want > r.max_workers {
            want = r.max_workers;
            why.push_str(&format!(" (max {})", r.max_workers));
        }
        if r.max_step_up > 0 && want > current.saturating_add(r.max_step_up) {
            want = current.saturating_add(r.max_step_up);
            why.push_str(&format!(" (step cap +{})", r.max_step_up));
        }
        // Stabilisation: keep every recommendation of the window; going down takes
        // their maximum.
        self.recent.push_back((now, want));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > r.scale_down_window)
            || self.recent.len() > MAX_RECENT
        {
            self.recent.pop_front();
        }
        if want < current {
            let held = self.recent.iter().map(|(_, n)| *n).max().unwrap_or(want);
            if held > want {
                let to = held.min(current);
                why.push_str(&format!(
                    "; holding {to} (highest in the {} s scale-down window)",
                    r.scale_down_window.as_secs()
                ));
                want = to;
            }
        }
        decision(want, why)
    }
}

fn decision(desired: u32, reason: String) -> BacklogDecision {
    BacklogDecision { desired, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> BacklogRules {
        BacklogRules {
            min_workers: 0,
            max_workers: 8,
            target_jobs_per_worker: 100,
            activation_jobs: 0,
            max_oldest_age_ms: 0,
            scale_down_window: Duration::from_secs(30),
            cooldown: Duration::from_secs(60),
            max_step_up: 0,
        }
    }

    fn at(depth: u64) -> Option<BacklogSample> {
        Some(BacklogSample {
            depth,
            oldest_age_ms: None,
        })
    }

    #[test]
    fn desired_is_backlog_over_target_clamped() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(rules());
        assert_eq!(p.decide(t0, 1, at(250)).desired, 3);
        assert_eq!(p.decide(t0, 3, at(301)).desired, 4);
        let d = p.decide(t0, 4, at(10_000));
        assert_eq!(d.desired, 8, "{}", d.reason);
        assert!(d.reason.contains("max 8"), "{}", d.reason);
    }

    #[test]
    fn zero_wakes_on_activation_and_returns_after_cooldown() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(BacklogRules {
            activation_jobs: 5,
            ..rules()
        });
        // At zero, a backlog within the activation threshold does not wake anyone.
        assert_eq!(p.decide(t0, 0, at(5)).desired, 0);
        // Above it: at once, sized by the backlog.
        assert_eq!(p.decide(t0, 0, at(6)).desired, 1);
        assert_eq!(p.decide(t0, 1, at(420)).desired, 5);
        // Drained: the window holds the count, the cooldown keeps at least one.
        let s = t0 + Duration::from_secs(10);
        let d = p.decide(s, 5, at(0));
        assert_eq!(d.desired, 5, "{}", d.reason);
        let s = t0 + Duration::from_secs(45);
        assert_eq!(p.decide(s, 5, at(0)).desired, 1);
        // Inactive for the whole cooldown: zero.
        let s = t0 + Duration::from_secs(61);
        let d = p.decide(s, 1, at(0));
        assert_eq!(d.desired, 0, "{}", d.reason);
        assert!(d.reason.contains("scale to zero"), "{}", d.reason);
    }

    #[test]
    fn min_workers_above_zero_never_reaches_zero() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(BacklogRules {
            min_workers: 2,
            ..rules()
        });
        assert_eq!(p.decide(t0, 2, at(0)).desired, 2);
        assert_eq!(
            p.decide(t0 + Duration::from_secs(3600), 2, at(0)).desired,
            2
        );
    }

    #[test]
    fn scale_down_waits_for_the_window() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(rules());
        assert_eq!(p.decide(t0, 1, at(600)).desired, 6);
        let d = p.decide(t0 + Duration::from_secs(5), 6, at(150));
        assert_eq!(d.desired, 6, "{}", d.reason);
        let d = p.decide(t0 + Duration::from_secs(31), 6, at(150));
        assert_eq!(d.desired, 2, "{}", d.reason);
    }

    #[test]
    fn an_ageing_backlog_adds_a_worker() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(BacklogRules {
            max_oldest_age_ms: 1_000,
            ..rules()
        });
        let s = |age| {
            Some(BacklogSample {
                depth: 50,
                oldest_age_ms: Some(age),
            })
        };
        // First sample: no trend yet.
        assert_eq!(p.decide(t0, 1, s(5_000)).desired, 1);
        let d = p.decide(t0, 1, s(6_000));
        assert_eq!(d.desired, 2, "{}", d.reason);
        assert!(d.reason.contains("ageing"), "{}", d.reason);
        // Age falling (being caught up): no extra worker, and the window holds.
        assert_eq!(p.decide(t0, 2, s(900)).desired, 2);
    }

    #[test]
    fn step_cap_and_missing_data() {
        let t0 = Instant::now();
        let mut p = BacklogPolicy::new(BacklogRules {
            max_step_up: 2,
            ..rules()
        });
        assert_eq!(p.decide(t0, 1, at(800)).desired, 3);
        let d = p.decide(t0, 3, None);
        assert_eq!(d.desired, 3);
        assert!(d.reason.contains("unavailable"));
    }
}
