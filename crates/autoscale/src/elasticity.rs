//! SPEC elasticity metrics (Herbst et al., SPEC-RG-2016-01), as DESIGN.md section 6
//! defines them, over per-second series of demand d_t (instances needed to meet the SLO,
//! at least 1) and supply s_t (instances able to serve), with Δt = 1 s and T seconds:
//!
//! - accuracy_U = 100/T Σ max(d−s, 0)/d, accuracy_O = 100/T Σ max(s−d, 0)/d
//! - timeshare_U = 100/T Σ [d > s], timeshare_O = 100/T Σ [s > d]
//! - instability = 100/(T−1) Σ [supply and demand move in opposite directions]
//! - jitter = (supply adaptations − demand adaptations) per minute (negative: sluggish,
//!   positive: oscillating); an adaptation is a second in which the series changes.
//!
//! Also: flaps, the number of direction reversals of a count within a window. Pure
//! arithmetic over slices.

use serde::Serialize;

/// The SPEC elasticity metrics of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Elasticity {
    /// Mean relative under-provisioning, percent.
    pub accuracy_under_pct: f64,
    /// Mean relative over-provisioning, percent.
    pub accuracy_over_pct: f64,
    /// Share of time under-provisioned, percent.
    pub timeshare_under_pct: f64,
    /// Share of time over-provisioned, percent.
    pub timeshare_over_pct: f64,
    /// Share of time supply and demand move in opposite directions, percent.
    pub instability_pct: f64,
    /// (supply adaptations − demand adaptations) per minute.
    pub jitter_per_min: f64,
    /// Seconds in which supply changed.
    pub supply_adaptations: u64,
    /// Seconds in which demand changed.
    pub demand_adaptations: u64,
}

/// Computes [`Elasticity`] from equally long per-second series. Demand values of 0 are
/// treated as 1 (an idle service still needs one instance).
pub fn elasticity(demand: &[u32], supply: &[u32]) -> Elasticity {
    let t = demand.len().min(supply.len());
    if t == 0 {
        return Elasticity {
            accuracy_under_pct: 0.0,
            accuracy_over_pct: 0.0,
            timeshare_under_pct: 0.0,
            timeshare_over_pct: 0.0,
            instability_pct: 0.0,
            jitter_per_min: 0.0,
            supply_adaptations: 0,
            demand_adaptations: 0,
        };
    }
    let (mut acc_u, mut acc_o, mut ts_u, mut ts_o) = (0.0, 0.0, 0u64, 0u64);
    for i in 0..t {
        let d = f64::from(demand[i].max(1));
        let s = f64::from(supply[i]);
        if d > s {
            acc_u += (d - s) / d;
            ts_u += 1;
        } else if s > d {
            acc_o += (s - d) / d;
            ts_o += 1;
        }
    }
    let (mut opposite, mut s_adapt, mut d_adapt) = (0u64, 0u64, 0u64);
    for i in 1..t {
        let ds = i64::from(supply[i]) - i64::from(supply[i - 1]);
        let dd = i64::from(demand[i].max(1)) - i64::from(demand[i - 1].max(1));
        if ds.signum() * dd.signum() < 0 {
            opposite += 1;
        }
        s_adapt += u64::from(ds != 0);
        d_adapt += u64::from(dd != 0);
    }
    let tf = t as f64;
    Elasticity {
        accuracy_under_pct: 100.0 * acc_u / tf,
        accuracy_over_pct: 100.0 * acc_o / tf,
        timeshare_under_pct: 100.0 * ts_u as f64 / tf,
        timeshare_over_pct: 100.0 * ts_o as f64 / tf,
        instability_pct: if t > 1 {
            100.0 * opposite as f64 / (tf - 1.0)
        } else {
            0.0
        },
        jitter_per_min: (s_adapt as f64 - d_adapt as f64) / (tf / 60.0),
        supply_adaptations: s_adapt,
        demand_adaptations: d_adapt,
    }
}

/// Direction reversals of `counts` (one value per second) where the reversing change
/// comes less than `window_s` seconds after the previous change: up then down, or down
/// then up, inside one stabilisation window.
pub fn flaps(counts: &[u32], window_s: u64) -> u64 {
    let mut last: Option<(usize, i64)> = None;
    let mut n = 0;
    for i in 1..counts.len() {
        let dir = (i64::from(counts[i]) - i64::from(counts[i - 1])).signum();
        if dir == 0 {
            continue;
        }
        if let Some((at, prev)) = last
            && prev != dir
            && ((i - at) as u64) < window_s
        {
            n += 1;
        }
        last = Some((i, dir));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_supply_scores_zero() {
        let d = [1, 2, 3, 3, 2];
        let e = elasticity(&d, &d);
        assert_eq!(e.accuracy_under_pct, 0.0);
        assert_eq!(e.accuracy_over_pct, 0.0);
        assert_eq!(e.timeshare_under_pct, 0.0);
        assert_eq!(e.instability_pct, 0.0);
        assert_eq!(e.jitter_per_min, 0.0);
    }

    #[test]
    fn hand_computed_example() {
        // d: 2 2 4 4, s: 2 3 3 2.
        // t=1 over by 1/2; t=2 under by 1/4; t=3 under by 2/4.
        let e = elasticity(&[2, 2, 4, 4], &[2, 3, 3, 2]);
        assert!((e.accuracy_over_pct - 100.0 * 0.5 / 4.0).abs() < 1e-9);
        assert!((e.accuracy_under_pct - 100.0 * 0.75 / 4.0).abs() < 1e-9);
        assert!((e.timeshare_under_pct - 50.0).abs() < 1e-9);
        assert!((e.timeshare_over_pct - 25.0).abs() < 1e-9);
        // Steps: (ds, dd) = (+1, 0), (0, +2), (-1, 0): never opposite.
        assert_eq!(e.instability_pct, 0.0);
        // 2 supply adaptations, 1 demand adaptation over 4 s: +1 per 4 s = 15 per minute.
        assert!((e.jitter_per_min - 15.0).abs() < 1e-9);
        // Opposite moves: d 3 -> 2 while s 1 -> 2.
        let e = elasticity(&[3, 2], &[1, 2]);
        assert!((e.instability_pct - 100.0).abs() < 1e-9);
    }

    #[test]
    fn flaps_count_reversals_inside_the_window_only() {
        // up at 1, down at 3 (2 s later): a flap in a 10 s window, not in a 2 s one.
        let c = [1, 2, 2, 1, 1];
        assert_eq!(flaps(&c, 10), 1);
        assert_eq!(flaps(&c, 2), 0);
        // Same direction twice is not a flap.
        assert_eq!(flaps(&[1, 2, 3, 4], 100), 0);
    }
}
