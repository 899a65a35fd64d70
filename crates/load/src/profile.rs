//! Rate profiles (constant, ramp, step, spike, Black Friday) and the open-loop schedule
//! they produce.
//!
//! Every profile is a list of piecewise-linear stages; the schedule inverts the integral
//! of the rate exactly, so arrival `k` is due when `k + phase` requests are owed. This is
//! what makes the run open loop: the send times are fixed up front and never depend on
//! what the target does. Pure: no clock, no I/O; offsets are relative to a start instant
//! the caller chooses.

use std::time::Duration;

use serde::Serialize;

/// One linear piece of a profile: the rate moves from `from_rps` to `to_rps` over
/// `duration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// How long the stage lasts.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Rate at the start of the stage, requests per second.
    pub from_rps: f64,
    /// Rate at the end of the stage, requests per second.
    pub to_rps: f64,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A rate over time: consecutive linear stages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateProfile {
    /// Name for reports (`constant`, `ramp`, `step`, `spike`, `black_friday`, `stages`).
    pub kind: String,
    /// The stages in order.
    pub stages: Vec<Stage>,
}

impl RateProfile {
    /// Stages given directly; each must have a finite non-negative rate, and the total
    /// duration must be positive.
    pub fn from_stages(kind: &str, stages: Vec<Stage>) -> Result<RateProfile, String> {
        if stages.is_empty() {
            return Err("a profile needs at least one stage".into());
        }
        for (i, s) in stages.iter().enumerate() {
            for r in [s.from_rps, s.to_rps] {
                if !r.is_finite() || !(0.0..=1e8).contains(&r) {
                    return Err(format!("stage {i}: rate {r} out of range (0..=100000000)"));
                }
            }
        }
        let p = RateProfile {
            kind: kind.to_string(),
            stages,
        };
        if p.duration().is_zero() {
            return Err("profile duration is zero".into());
        }
        if p.expected_count() < 0.5 {
            return Err("profile schedules no request (rate too low for its duration)".into());
        }
        Ok(p)
    }

    /// `rps` for `duration`.
    pub fn constant(rps: f64, duration: Duration) -> Result<RateProfile, String> {
        Self::from_stages("constant", vec![stage(duration, rps, rps)])
    }

    /// Linear from `from_rps` to `to_rps` over `duration`.
    pub fn ramp(from_rps: f64, to_rps: f64, duration: Duration) -> Result<RateProfile, String> {
        Self::from_stages("ramp", vec![stage(duration, from_rps, to_rps)])
    }

    /// `steps` plateaus of `every` each: `start_rps`, `start_rps + step_rps`, ...
    pub fn step(
        start_rps: f64,
        step_rps: f64,
        every: Duration,
        steps: u32,
    ) -> Result<RateProfile, String> {
        if steps == 0 || steps > 10_000 {
            return Err("steps must be 1..=10000".into());
        }
        let stages = (0..steps)
            .map(|i| {
                let r = start_rps + step_rps * i as f64;
                stage(every, r, r)
            })
            .collect();
        Self::from_stages("step", stages)
    }

    /// `base_rps` for `before`, a jump to `peak_rps` held for `hold`, then `base_rps` for
    /// `after`. The jump takes 1 ms each way (a stage must have a duration).
    pub fn spike(
        base_rps: f64,
        peak_rps: f64,
        before: Duration,
        hold: Duration,
        after: Duration,
    ) -> Result<RateProfile, String> {
        let edge = Duration::from_millis(1);
        Self::from_stages(
            "spike",
            vec![
                stage(before, base_rps, base_rps),
                stage(edge, base_rps, peak_rps),
                stage(hold, peak_rps, peak_rps),
                stage(edge, peak_rps, base_rps),
                stage(after, base_rps, base_rps),
            ],
        )
    }

    /// "Black Friday": normal traffic at `base_rps` for `normal`, a climb to
    /// `factor * base_rps` over `ramp_up` (minutes, in real use), held for `peak`, back down
    /// over `ramp_down`, then normal again for `after`.
    pub fn black_friday(
        base_rps: f64,
        factor: f64,
        normal: Duration,
        ramp_up: Duration,
        peak: Duration,
        ramp_down: Duration,
        after: Duration,
    ) -> Result<RateProfile, String> {
        if !(1.0..=1000.0).contains(&factor) {
            return Err(format!("factor {factor} out of range (1..=1000)"));
        }
        let top = base_rps * factor;
        Self::from_stages(
            "black_friday",
            vec![
                stage(normal, base_rps, base_rps),
                stage(ramp_up, base_rps, top),
                stage(peak, top, top),
                stage(ramp_down, top, base_rps),
                stage(after, base_rps, base_rps),
            ],
        )
    }

    /// Total length of the profile.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The rate at offset `t` (0 after the end).
    pub fn rate_at(&self, t: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for s in &self.stages {
            let end = start + s.duration;
            if t < end {
                let frac = (t - start).as_secs_f64() / s.duration.as_secs_f64();
                return s.from_rps + (s.to_rps - s.from_rps) * frac;
            }
            start = end;
        }
        0.0
    }

    /// The highest rate anywhere in the profile.
    pub fn peak_rps(&self) -> f64 {
        self.stages
            .iter()
            .flat_map(|s| [s.from_rps, s.to_rps])
            .fold(0.0, f64::max)
    }

    /// The number of requests the profile owes over its whole duration (its integral).
    pub fn expected_count(&self) -> f64 {
        self.stages
            .iter()
            .map(|s| (s.from_rps + s.to_rps) / 2.0 * s.duration.as_secs_f64())
            .sum()
    }

    /// The same shape with every rate multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> RateProfile {
        RateProfile {
            kind: self.kind.clone(),
            stages: self
                .stages
                .iter()
                .map(|s| stage(s.duration, s.from_rps * factor, s.to_rps * factor))
                .collect(),
        }
    }

    /// The send offsets of this profile, with arrival `k` due when `k + phase` requests are
    /// owed (`phase` in `[0, 1)` interleaves several generator threads).
    pub fn schedule(&self, phase: f64) -> Schedule<'_> {
        Schedule {
            profile: self,
            stage: 0,
            stage_start_s: 0.0,
            owed_at_stage_start: 0.0,
            next: phase.clamp(0.0, 0.999_999),
        }
    }
}

fn stage(duration: Duration, from_rps: f64, to_rps: f64) -> Stage {
    Stage {
        duration,
        from_rps,
        to_rps,
    }
}

/// Iterator of send offsets from the start of the run, in order, ending with the profile.
#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    profile: &'a RateProfile,
    stage: usize,
    stage_start_s: f64,
    owed_at_stage_start: f64,
    /// The cumulative count at which the next arrival is due.
    next: f64,
}

impl Iterator for Schedule<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        while let Some(s) = self.profile.stages.get(self.stage) {
            let len = s.duration.as_secs_f64();
            let a = s.from_rps;
            let b = (s.to_rps - s.from_rps) / len;
            let owed_in_stage = (a + s.to_rps) / 2.0 * len;
            let x = self.next - self.owed_at_stage_start;
            if x < owed_in_stage {
                // Solve a*t + b*t^2/2 = x for t in [0, len].
                let t = if b.abs() < 1e-12 {
                    x / a
                } else {
                    (-a + (a * a + 2.0 * b * x).max(0.0).sqrt()) / b
                };
                self.next += 1.0;
                let at = self.stage_start_s + t.clamp(0.0, len);
                return Some(Duration::from_secs_f64(at));
            }
            self.stage += 1;
            self.stage_start_s += len;
            self.owed_at_stage_start += owed_in_stage;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_schedule_is_evenly_spaced_and_counts_right() {
        let p = RateProfile::constant(1000.0, Duration::from_secs(2)).unwrap();
        let v: Vec<_> = p.schedule(0.0).collect();
        assert_eq!(v.len(), 2000);
        assert_eq!(v[0], Duration::ZERO);
        let gap = v[1] - v[0];
        assert!((gap.as_secs_f64() - 0.001).abs() < 1e-9, "{gap:?}");
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn threads_with_phases_interleave_to_the_full_rate() {
        let p = RateProfile::constant(900.0, Duration::from_secs(1)).unwrap();
        let per = p.scaled(1.0 / 3.0);
        let mut all: Vec<_> = (0..3)
            .flat_map(|i| per.schedule(i as f64 / 3.0).collect::<Vec<_>>())
            .collect();
        all.sort();
        assert_eq!(all.len(), 900);
        let gaps: Vec<f64> = all
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64())
            .collect();
        assert!(gaps.iter().all(|g| (g - 1.0 / 900.0).abs() < 1e-6));
    }

    #[test]
    fn ramp_owes_its_integral_and_speeds_up() {
        let p = RateProfile::ramp(0.0, 200.0, Duration::from_secs(10)).unwrap();
        assert_eq!(p.expected_count(), 1000.0);
        let v: Vec<_> = p.schedule(0.5).collect();
        assert_eq!(v.len(), 1000);
        let first_half = v.iter().filter(|d| d.as_secs_f64() < 5.0).count();
        // Integral of the first half is a quarter of the total.
        assert!((240..=260).contains(&first_half), "{first_half}");
    }

    #[test]
    fn black_friday_peaks_at_factor_times_base() {
        let s = Duration::from_secs(60);
        let p = RateProfile::black_friday(10.0, 100.0, s, s, s, s, s).unwrap();
        assert_eq!(p.peak_rps(), 1000.0);
        assert_eq!(p.rate_at(Duration::from_secs(30)), 10.0);
        assert_eq!(p.rate_at(Duration::from_secs(150)), 1000.0);
        assert_eq!(p.rate_at(Duration::from_secs(90)), 505.0);
        assert_eq!(p.duration(), Duration::from_secs(300));
        let n = p.schedule(0.0).count() as f64;
        assert!((n - p.expected_count()).abs() <= 2.0);
    }

    #[test]
    fn spike_and_step_have_their_shapes() {
        let s = Duration::from_secs(1);
        let sp = RateProfile::spike(10.0, 500.0, s, s, s).unwrap();
        assert_eq!(sp.rate_at(Duration::from_millis(500)), 10.0);
        assert_eq!(sp.rate_at(Duration::from_millis(1500)), 500.0);
        let st = RateProfile::step(100.0, 50.0, s, 3).unwrap();
        assert_eq!(st.rate_at(Duration::from_millis(2500)), 200.0);
        assert!(RateProfile::constant(0.0, s).is_err());
        assert!(RateProfile::constant(f64::NAN, s).is_err());
    }
}
