//! Trace families: demand traces generated from a seed and documented parameter ranges,
//! so an autoscaler is judged on a distribution of traffic it was not tuned on rather
//! than on a handful of hand-drawn traces.
//!
//! A [`Scenario`] is a pure function of (family, seed): [`Scenario::draw`] draws the
//! family's parameters from the ranges below with a SplitMix64 stream of the seed, and
//! [`Scenario::trace`] builds the per-second demand from (parameters, seed) alone.
//! Nothing reads a clock or a global RNG, so a seed replays byte for byte (a test pins a
//! hash of one trace per family). Transcendental functions (`exp`, `sin`, `ln`) come
//! from the platform's libm; the pinned hashes are those of x86_64 Linux.
//!
//! # Families and ranges (every range inclusive; "log" = log-uniform)
//! Shared by all families: base rate 40-400 rps (log), capped so the peak stays at or
//! under [`MAX_PEAK_RPS`] (the 100-instance fleet at its target); instance start-up
//! 5-120 s; demand noise 0-20% (the simulator's per-second Gaussian noise, from the
//! simulation seed). The capacity model's imperfections, drawn from a separate stream:
//! start-up jitter 0-50%, failed start-ups 0-10% (relaunched), cold instances for 0-60 s
//! starting at 30-100% capacity.
//!
//! | family | shape | parameters |
//! |---|---|---|
//! | `step` | base, one jump, hold, back to base | factor 2-20x (log); jump at 300-900 s; hold 300-900 s; 600 s after |
//! | `ramp` | linear ramp up, plateau, linear ramp down | factor 2-10x (log); ramp 10-600 s (log); start 300-900 s; plateau 300-900 s; 600 s after |
//! | `flash-crowd` | linear rise, short plateau, exponential decay; optional second surge | factor 3-20x (log); rise 10-300 s (log); plateau 0-120 s; decay time constant 60-900 s (1-15 min, log); second surge with probability 1/2, 0.3-0.8 of the first's excess, starting 2-6 decay constants after the first decay began (at the latest 600 s before the end); 3600 s |
//! | `diurnal` | 7 days of a working-day curve (two humps) and a weekend curve (one later, lower hump), day compressed to 480-720 s | peak/trough 3-15x (log); weekend peak 0.3-0.8 of weekday; lunch dip 0-0.3; first day of the week 0-6; slow AR(1) noise per 10 s with 0-15% stationary deviation |
//! | `mmpp` | two-state Markov-modulated arrivals: off at base, on at base x factor | factor 2-8x (log); mean on 20-300 s (log); mean off 60-600 s (log); sojourns exponential; 3600 s |
//! | `sawtooth` | slow linear climb, sharp fall (or the mirror: sharp rise, slow fall) | factor 2-6x; period 600-1800 s; reversed with probability 1/2; 3600 s |
//! | `quiet-spikes` | low base with rare short spikes | base 20-100 rps (log, replaces the shared range); spikes a Poisson process with mean gap 600-1800 s; each 3-15x (log), 10-120 s long, 5 s linear rise and fall; 3600 s |
//!
//! Architecture invariant: a family's generator may only read its parameters and the
//! seed; changing a range or the order of draws changes every scenario of that family
//! and must update the pinned hashes in the tests (that is the point of pinning them).

use serde::Serialize;

use crate::rng::SplitMix64;
use crate::trace::Trace;

/// Peak demand a scenario may reach, rps: 100 instances of the default model at
/// roughly their in-flight target (6 of 8 slots), so `max_instances = 100` can serve it.
pub const MAX_PEAK_RPS: f64 = 6000.0;

/// Instance start-up range, seconds.
pub const STARTUP_S: (u64, u64) = (5, 120);
/// Demand noise range, percent.
pub const NOISE_PCT: (f64, f64) = (0.0, 20.0);
/// Shared base rate range, rps (log-uniform).
pub const BASE_RPS: (f64, f64) = (40.0, 400.0);

/// Stream ids: independent draws from one seed.
const STREAM_PARAMS: u64 = 1;
const STREAM_SHAPE: u64 = 2;
const STREAM_MODEL: u64 = 3;

/// Start-up jitter range, percent.
pub const STARTUP_JITTER_PCT: (f64, f64) = (0.0, 50.0);
/// Failed start-up range, percent.
pub const FAIL_START_PCT: (f64, f64) = (0.0, 10.0);
/// Cold period range, seconds.
pub const COLD_S: (u64, u64) = (0, 60);
/// Cold capacity range, percent.
pub const COLD_CAPACITY_PCT: (f64, f64) = (30.0, 100.0);

/// A family of generated traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// One jump and back.
    Step,
    /// Linear ramp up, plateau, ramp down.
    Ramp,
    /// Sudden surge, exponential decay, optional second surge.
    FlashCrowd,
    /// A week of days with weekday/weekend shapes and slow noise.
    Diurnal,
    /// Markov-modulated on/off bursts.
    Mmpp,
    /// Slow sawtooth.
    Sawtooth,
    /// Quiet traffic with rare spikes.
    QuietSpikes,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 7] = [
        Family::Step,
        Family::Ramp,
        Family::FlashCrowd,
        Family::Diurnal,
        Family::Mmpp,
        Family::Sawtooth,
        Family::QuietSpikes,
    ];

    /// The family's name in reports and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Step => "step",
            Family::Ramp => "ramp",
            Family::FlashCrowd => "flash-crowd",
            Family::Diurnal => "diurnal",
            Family::Mmpp => "mmpp",
            Family::Sawtooth => "sawtooth",
            Family::QuietSpikes => "quiet-spikes",
        }
    }

    /// The family named `name`, if any.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// A per-family salt so seed 1 of `step` and seed 1 of `ramp` are unrelated.
    fn salt(self) -> u64 {
        match self {
            Family::Step => 0x5354_4550,
            Family::Ramp => 0x5241_4d50,
            Family::FlashCrowd => 0x464c_4153,
            Family::Diurnal => 0x4449_5552,
            Family::Mmpp => 0x4d4d_5050,
            Family::Sawtooth => 0x5341_5754,
            Family::QuietSpikes => 0x5155_4945,
        }
    }
}

/// A family's drawn parameters (see the module docs for the ranges).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "family", rename_all = "kebab-case")]
pub enum Params {
    /// `step`.
    Step {
        /// Base rate, rps.
        base_rps: f64,
        /// Peak / base.
        factor: f64,
        /// Second of the jump.
        at_s: u64,
        /// Seconds at the peak.
        hold_s: u64,
    },
    /// `ramp`.
    Ramp {
        /// Base rate, rps.
        base_rps: f64,
        /// Plateau / base.
        factor: f64,
        /// Second the ramp starts.
        at_s: u64,
        /// Length of each ramp, seconds.
        ramp_s: u64,
        /// Seconds at the plateau.
        plateau_s: u64,
    },
    /// `flash-crowd`.
    FlashCrowd {
        /// Base rate, rps.
        base_rps: f64,
        /// Peak / base of the first surge.
        factor: f64,
        /// Second the first surge starts.
        at_s: u64,
        /// Linear rise, seconds.
        rise_s: u64,
        /// Plateau at the peak, seconds.
        plateau_s: u64,
        /// Time constant of the exponential decay, seconds.
        decay_s: f64,
        /// The second surge, if any: (start second, excess as a share of the first's).
        second: Option<(u64, f64)>,
    },
    /// `diurnal`.
    Diurnal {
        /// Night trough, rps.
        trough_rps: f64,
        /// Weekday peak / trough.
        factor: f64,
        /// Weekend peak excess as a share of the weekday's.
        weekend_share: f64,
        /// Depth of the lunch dip between the two weekday humps (0-0.3).
        lunch_dip: f64,
        /// Seconds per simulated day.
        day_s: u64,
        /// Day of the week the trace starts on (0 = Monday; 5, 6 = weekend).
        first_day: u64,
        /// Stationary standard deviation of the slow noise, fraction.
        noise_sd: f64,
    },
    /// `mmpp`.
    Mmpp {
        /// Off-state rate, rps.
        base_rps: f64,
        /// On-state rate / off-state rate.
        factor: f64,
        /// Mean on sojourn, seconds.
        mean_on_s: f64,
        /// Mean off sojourn, seconds.
        mean_off_s: f64,
    },
    /// `sawtooth`.
    Sawtooth {
        /// Low point, rps.
        base_rps: f64,
        /// High point / low point.
        factor: f64,
        /// Period, seconds.
        period_s: u64,
        /// Sharp rise and slow fall instead of slow climb and sharp fall.
        reversed: bool,
    },
    /// `quiet-spikes`.
    QuietSpikes {
        /// Quiet rate, rps.
        base_rps: f64,
        /// Mean gap between spike starts, seconds.
        mean_gap_s: f64,
    },
}

/// One generated evaluation case: a family, its seed, its parameters and the instance
/// start-up time and noise level it is simulated with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// The family.
    pub family: Family,
    /// The seed everything else was drawn from.
    pub seed: u64,
    /// The trace shape.
    pub params: Params,
    /// Instance start-up time, seconds.
    pub startup_s: u64,
    /// Demand noise, percent.
    pub noise_pct: f64,
    /// Start-up time jitter, percent (see [`crate::CapacityModel::startup_jitter_pct`]).
    pub startup_jitter_pct: f64,
    /// Chance a start-up fails and is relaunched, percent.
    pub fail_start_pct: f64,
    /// Seconds a new instance is cold.
    pub cold_s: u64,
    /// Capacity of a just-ready instance, percent.
    pub cold_capacity_pct: f64,
}

impl Scenario {
    /// Draws the scenario for (`family`, `seed`).
    pub fn draw(family: Family, seed: u64) -> Scenario {
        let mut r = SplitMix64::stream(seed ^ family.salt(), STREAM_PARAMS);
        let startup_s = r.int(STARTUP_S.0, STARTUP_S.1);
        let noise_pct = r.uniform(NOISE_PCT.0, NOISE_PCT.1);
        let base = r.log_uniform(BASE_RPS.0, BASE_RPS.1);
        let capped = |base: f64, factor: f64| base.min(MAX_PEAK_RPS / factor);
        let params = match family {
            Family::Step => {
                let factor = r.log_uniform(2.0, 20.0);
                Params::Step {
                    base_rps: capped(base, factor),
                    factor,
                    at_s: r.int(300, 900),
                    hold_s: r.int(300, 900),
                }
            }
            Family::Ramp => {
                let factor = r.log_uniform(2.0, 10.0);
                Params::Ramp {
                    base_rps: capped(base, factor),
                    factor,
                    at_s: r.int(300, 900),
                    ramp_s: r.log_uniform(10.0, 600.0).round() as u64,
                    plateau_s: r.int(300, 900),
                }
            }
            Family::FlashCrowd => {
                let factor = r.log_uniform(3.0, 20.0);
                let at_s = r.int(300, 900);
                let rise_s = r.log_uniform(10.0, 300.0).round() as u64;
                let plateau_s = r.int(0, 120);
                let decay_s = r.log_uniform(60.0, 900.0);
                let has_second = r.chance(0.5);
                let after = r.uniform(2.0, 6.0);
                let share = r.uniform(0.3, 0.8);
                let second = has_second.then(|| {
                    let start = at_s as f64 + (rise_s + plateau_s) as f64 + after * decay_s;
                    // Inside the trace, with at least 600 s of it left.
                    ((start.round() as u64).min(TRACE_S - 600), share)
                });
                Params::FlashCrowd {
                    base_rps: capped(base, factor),
                    factor,
                    at_s,
                    rise_s,
                    plateau_s,
                    decay_s,
                    second,
                }
            }
            Family::Diurnal => {
                let factor = r.log_uniform(3.0, 15.0);
                Params::Diurnal {
                    trough_rps: capped(base / 2.0, factor),
                    factor,
                    weekend_share: r.uniform(0.3, 0.8),
                    lunch_dip: r.uniform(0.0, 0.3),
                    day_s: r.int(480, 720),
                    first_day: r.int(0, 6),
                    noise_sd: r.uniform(0.0, 0.15),
                }
            }
            Family::Mmpp => {
                let factor = r.log_uniform(2.0, 8.0);
                Params::Mmpp {
                    base_rps: capped(base, factor),
                    factor,
                    mean_on_s: r.log_uniform(20.0, 300.0),
                    mean_off_s: r.log_uniform(60.0, 600.0),
                }
            }
            Family::Sawtooth => {
                let factor = r.uniform(2.0, 6.0);
                Params::Sawtooth {
                    base_rps: capped(base, factor),
                    factor,
                    period_s: r.int(600, 1800),
                    reversed: r.chance(0.5),
                }
            }
            Family::QuietSpikes => Params::QuietSpikes {
                base_rps: r.log_uniform(20.0, 100.0),
                mean_gap_s: r.uniform(600.0, 1800.0),
            },
        };
        // The model's imperfections come from their own stream, so adding them did not
        // change any trace.
        let mut m = SplitMix64::stream(seed ^ family.salt(), STREAM_MODEL);
        Scenario {
            family,
            seed,
            params,
            startup_s,
            noise_pct,
            startup_jitter_pct: m.uniform(STARTUP_JITTER_PCT.0, STARTUP_JITTER_PCT.1),
            fail_start_pct: m.uniform(FAIL_START_PCT.0, FAIL_START_PCT.1),
            cold_s: m.int(COLD_S.0, COLD_S.1),
            cold_capacity_pct: m.uniform(COLD_CAPACITY_PCT.0, COLD_CAPACITY_PCT.1),
        }
    }

    /// The scenario's demand trace (see [`generate`]).
    pub fn trace(&self) -> Trace {
        generate(&self.params, self.seed)
    }

    /// A one-line description for reports.
    pub fn describe(&self) -> String {
        let p = match &self.params {
            Params::Step {
                base_rps,
                factor,
                at_s,
                hold_s,
            } => format!("{base_rps:.0} rps x{factor:.1} at {at_s} s for {hold_s} s"),
            Params::Ramp {
                base_rps,
                factor,
                ramp_s,
                ..
            } => format!("{base_rps:.0} rps x{factor:.1} over {ramp_s} s"),
            Params::FlashCrowd {
                base_rps,
                factor,
                rise_s,
                decay_s,
                second,
                ..
            } => format!(
                "{base_rps:.0} rps x{factor:.1} rise {rise_s} s decay {decay_s:.0} s{}",
                if second.is_some() { " +2nd" } else { "" }
            ),
            Params::Diurnal {
                trough_rps,
                factor,
                day_s,
                ..
            } => format!("{trough_rps:.0} rps x{factor:.1} day {day_s} s"),
            Params::Mmpp {
                base_rps,
                factor,
                mean_on_s,
                mean_off_s,
            } => {
                format!("{base_rps:.0} rps x{factor:.1} on {mean_on_s:.0} s off {mean_off_s:.0} s")
            }
            Params::Sawtooth {
                base_rps,
                factor,
                period_s,
                reversed,
            } => format!(
                "{base_rps:.0} rps x{factor:.1} period {period_s} s{}",
                if *reversed { " reversed" } else { "" }
            ),
            Params::QuietSpikes {
                base_rps,
                mean_gap_s,
            } => format!("{base_rps:.0} rps spikes every {mean_gap_s:.0} s"),
        };
        format!(
            "{} #{}: {p}; start-up {} s; noise {:.1}%",
            self.family.as_str(),
            self.seed,
            self.startup_s,
            self.noise_pct
        )
    }
}

/// Length of the non-diurnal traces, seconds.
pub const TRACE_S: u64 = 3600;

/// The demand trace for `params`; `seed` drives the random parts of the shape (MMPP
/// sojourns, spike times, diurnal slow noise). A pure function of its arguments.
pub fn generate(params: &Params, seed: u64) -> Trace {
    let mut r = SplitMix64::stream(seed, STREAM_SHAPE);
    let rps: Vec<f64> = match *params {
        Params::Step {
            base_rps,
            factor,
            at_s,
            hold_s,
        } => (0..at_s + hold_s + 600)
            .map(|t| {
                if (at_s..at_s + hold_s).contains(&t) {
                    base_rps * factor
                } else {
                    base_rps
                }
            })
            .collect(),
        Params::Ramp {
            base_rps,
            factor,
            at_s,
            ramp_s,
            plateau_s,
        } => {
            let peak = base_rps * factor;
            let up_end = at_s + ramp_s;
            let down_start = up_end + plateau_s;
            let down_end = down_start + ramp_s;
            (0..down_end + 600)
                .map(|t| {
                    let frac = |from: u64| (t - from) as f64 / ramp_s.max(1) as f64;
                    if t < at_s || t >= down_end {
                        base_rps
                    } else if t < up_end {
                        base_rps + (peak - base_rps) * frac(at_s)
                    } else if t < down_start {
                        peak
                    } else {
                        peak - (peak - base_rps) * frac(down_start)
                    }
                })
                .collect()
        }
        Params::FlashCrowd {
            base_rps,
            factor,
            at_s,
            rise_s,
            plateau_s,
            decay_s,
            second,
        } => {
            let excess = base_rps * (factor - 1.0);
            let surge = |t: f64, start: f64, height: f64| -> f64 {
                let rise = rise_s.max(1) as f64;
                let top = start + rise + plateau_s as f64;
                if t < start {
                    0.0
                } else if t < start + rise {
                    height * (t - start) / rise
                } else if t < top {
                    height
                } else {
                    height * (-(t - top) / decay_s).exp()
                }
            };
            (0..TRACE_S)
                .map(|t| {
                    let t = t as f64;
                    let mut v = base_rps + surge(t, at_s as f64, excess);
                    if let Some((start, share)) = second {
                        v += surge(t, start as f64, excess * share);
                    }
                    v
                })
                .collect()
        }
        Params::Diurnal {
            trough_rps,
            factor,
            weekend_share,
            lunch_dip,
            day_s,
            first_day,
            noise_sd,
        } => {
            let excess = trough_rps * (factor - 1.0);
            let bump = |h: f64, centre: f64, width: f64| (-((h - centre) / width).powi(2)).exp();
            // AR(1) per 10 s with coefficient 0.9: stationary sd = sd_step / sqrt(1 - 0.81).
            let step_sd = noise_sd * (1.0f64 - 0.81).sqrt();
            let mut slow = 0.0f64;
            (0..7 * day_s)
                .map(|t| {
                    if t % 10 == 0 {
                        slow = 0.9 * slow + step_sd * r.normal();
                    }
                    let day = (first_day + t / day_s) % 7;
                    let h = (t % day_s) as f64 * 24.0 / day_s as f64;
                    let shape = if day >= 5 {
                        weekend_share * bump(h, 15.0, 4.0)
                    } else {
                        (bump(h, 11.0, 2.5) + (1.0 - lunch_dip) * bump(h, 15.5, 2.5)).min(1.0)
                    };
                    ((trough_rps + excess * shape) * (1.0 + slow)).max(0.0)
                })
                .collect()
        }
        Params::Mmpp {
            base_rps,
            factor,
            mean_on_s,
            mean_off_s,
        } => {
            let mut on = false;
            let mut left = r.exponential(mean_off_s);
            (0..TRACE_S)
                .map(|_| {
                    // Bounded: each second consumes at most a few sojourns (all >= 1 s).
                    while left < 1.0 {
                        on = !on;
                        left += r
                            .exponential(if on { mean_on_s } else { mean_off_s })
                            .max(1.0);
                    }
                    left -= 1.0;
                    if on { base_rps * factor } else { base_rps }
                })
                .collect()
        }
        Params::Sawtooth {
            base_rps,
            factor,
            period_s,
            reversed,
        } => (0..TRACE_S)
            .map(|t| {
                let phase = (t % period_s) as f64 / period_s as f64;
                let climb = if reversed { 1.0 - phase } else { phase };
                base_rps * (1.0 + (factor - 1.0) * climb)
            })
            .collect(),
        Params::QuietSpikes {
            base_rps,
            mean_gap_s,
        } => {
            let mut v = vec![base_rps; TRACE_S as usize];
            let mut start = r.exponential(mean_gap_s);
            // At most TRACE_S / 1 spikes; the gap is at least 1 s.
            while start < TRACE_S as f64 {
                let factor = r.log_uniform(3.0, 15.0);
                let len = r.uniform(10.0, 120.0);
                let height = base_rps * (factor - 1.0);
                let s0 = start.floor() as usize;
                let end = ((start + len + 5.0).ceil() as usize).min(v.len());
                for (t, x) in v.iter_mut().enumerate().take(end).skip(s0) {
                    let dt = t as f64 - start;
                    let k = (dt / 5.0)
                        .min(1.0)
                        .min((start + len + 5.0 - t as f64) / 5.0);
                    *x += height * k.max(0.0);
                }
                start += r.exponential(mean_gap_s).max(1.0) + len;
            }
            v
        }
    };
    Trace { rps }
}

/// FNV-1a over the bit patterns of a trace's samples: the seed-replay fingerprint.
pub fn fingerprint(trace: &Trace) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in &trace.rps {
        for b in v.to_bits().to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests;
